"""Progressive distillation: a student that samples in a few steps what its teacher samples in many.

    python -m diffusion.distill --teacher weights/sprites16 --data ../shared/data/dawnlike16 \\
        --out runs/fast            # 32 -> 16 -> 8 -> 4 DDIM steps, one round each

Salimans & Ho (2022): a student (at first a copy of its teacher) is trained so that one of its
deterministic DDIM steps lands where two of its teacher's land; the student of one round is the
teacher of the next, halving the steps each round. The first teacher is guided (classifier-free
guidance at ``--guidance``, the model's default, above the model's guidance floor as its defaults
sample), so every student has the guidance folded in and takes one network call per step where
the teacher took a guided pair (Meng et al. 2023 also make the scale an input of the student; one
fixed scale is the simpler half of their idea). A text teacher's student learns with the
sprites' names as prompts, label and text dropped out in the mix the teacher was trained with, so
it follows a label, a prompt or both.

The target, in the sigma view (x = x0 + sigma * eps, see ``samplers``): a DDIM step from sigma to
sigma' is x' = x0 + sigma' * (x - x0) / sigma = r * x + (1 - r) * x0 with r = sigma' / sigma. So
the clean-image estimate that takes the student in one step to x'', where the teacher got in two,
is x0~ = (x'' - r * x) / (1 - r). The loss is the squared error of the student's x0 against x0~,
weighted by max(SNR, 1) ("truncated SNR", Salimans & Ho Sec. 4).

The run folder is always a loadable model (the last finished round; every round's student is also
kept under ``rounds/``), with ``checkpoint.pt`` written atomically every ``--save-every`` steps:
``--resume`` continues a killed run where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from .card import data_credit, write_model_card
from .data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, load_dataset
from .device import default_device, describe
from .ema import update_ema
from .files import atomic_write
from .options import guidance_floor
from .pipeline import SpritePipeline, _Words
from .samplers import ddim
from .train import (
    drop_conditions,
    name_inputs,
    sampling_weights,
    text_table,
    token_table,
    training_tensor,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m diffusion.distill", description=__doc__.split("\n")[0]
    )
    p.add_argument("--teacher", required=True, type=Path, help="the model folder to distil")
    p.add_argument("--data", required=True, help="the teacher's training data (course format)")
    p.add_argument("--out", required=True, type=Path, help="run folder (becomes a model folder)")
    p.add_argument("--teacher-steps", type=int, default=32, help="DDIM steps of the first teacher")
    p.add_argument("--steps", type=int, default=4, help="DDIM steps of the final student")
    p.add_argument("--iterations", type=int, default=2000, help="training steps per round")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4, help="annealed linearly to 0 in each round")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--p-uncond", type=float, default=0.1, help="label dropout, as in training")
    p.add_argument(
        "--guidance", type=float, default=None, help="guidance folded in (the teacher's default)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    args = p.parse_args(argv)
    rounds = (args.teacher_steps // max(args.steps, 1)).bit_length() - 1
    if args.steps < 1 or rounds < 1 or args.teacher_steps != args.steps * 2**rounds:
        p.error("--teacher-steps must be --steps times a power of two (e.g. 32 and 4)")
    return args


def one_step_target(
    x: torch.Tensor, x_next: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """The clean image x0~ whose DDIM step from ``x`` at ``sigma`` lands on ``x_next`` at
    ``sigma_next``: x_next = r * x + (1 - r) * x0~ with r = sigma_next / sigma."""
    r = sigma_next / sigma
    return (x_next - r * x) / (1 - r)


class Distiller:
    """The state of a distillation run: the rounds' teacher and student, EMA, optimiser, data."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = default_device()
        self.original = SpritePipeline.from_pretrained(args.teacher, device=self.device)
        self.guidance = (
            self.original.defaults["guidance"] if args.guidance is None else args.guidance
        )
        # The student should learn the pictures the teacher draws at its shipped defaults.
        self.floor = float(self.original.defaults["guidance_sigma_min"])
        data = load_dataset(args.data)
        if data.label_names != self.original.labels:
            sys.exit(f"--data {args.data}: its labels differ from the teacher's")
        self.data = data.split(EVAL_HOLDOUT, EVAL_SPLIT_SEED)[0]
        if self.original.rgba and self.data.alpha is None:
            sys.exit(f"--data {args.data}: the teacher models alpha and the data has none")
        self.images = training_tensor(
            self.data.images, self.data.alpha if self.original.rgba else None
        )
        self.labels = torch.as_tensor(self.data.labels)
        self.weights = sampling_weights(self.data.labels, 0.5)
        self.text, self.tokens = None, None
        if self.original.supports_text:
            if self.data.names is None:
                sys.exit(f"--data {args.data}: a text teacher needs its sprites' names")
            clip = self.original.text_encoder
            self.text = text_table(clip, self.data)
            self.tokens = (
                token_table(clip, self.data) if self.original.model.config.cross_attention else None
            )
            # The student sees the branches in the mix its teacher was trained on.
            recipe = self.original.config.get("training", {}).get("recipe", {})
            self.dropout = (recipe.get("p_uncond_text", 0.1), recipe.get("cond_dropout"))
        self.generator = torch.Generator().manual_seed(args.seed)
        self.round, self.step, self.elapsed = 0, 0, 0.0
        self.start_round(self.original.model)

    @property
    def student_steps(self) -> int:
        return self.args.teacher_steps // 2 ** (self.round + 1)

    def start_round(self, teacher_net: torch.nn.Module) -> None:
        """The teacher of this round, and its student starting as a copy of it."""
        first = self.round == 0
        self.teacher = self.pipeline(teacher_net)
        self.student = self.pipeline(copy.deepcopy(teacher_net).requires_grad_(True))
        self.ema = copy.deepcopy(self.student.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.student.model.parameters(), lr=self.args.lr)
        self.teacher_guidance = self.guidance if first else 1.0
        self.teacher_floor = self.floor if first else 0.0
        self.sigmas = self.original.schedule.sigmas(2 * self.student_steps).float()

    def pipeline(self, net: torch.nn.Module) -> SpritePipeline:
        pipe = SpritePipeline(
            net,
            self.original.schedule,
            self.original.labels,
            device=self.device,
            text_encoder=self.original.text_encoder,
        )
        pipe.defaults, pipe.palette = dict(self.original.defaults), self.original.palette
        return pipe

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, _Words | None]:
        """Training sprites (flipped at random), their labels and for a text model their names,
        some dropped out as in training."""
        g, n = self.generator, self.args.batch_size
        idx = torch.multinomial(self.weights, n, replacement=True, generator=g)
        flip = torch.rand(n, generator=g) < 0.5
        x0 = torch.where(flip[:, None, None, None], self.images[idx].flip(3), self.images[idx])
        context = F.one_hot(self.labels[idx], len(self.original.labels)).float()
        if self.text is None:
            context[torch.rand(n, generator=g) < self.args.p_uncond] = 0
            return x0.to(self.device), context.to(self.device), None
        dropped = drop_conditions(context, g, self.args.p_uncond, *self.dropout)
        inputs = name_inputs(self.text, self.tokens, idx, flip, dropped)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        words = _Words(inputs["text"], inputs.get("tokens"), inputs.get("token_mask"))
        return x0.to(self.device), context.to(self.device), words

    def train_step(self) -> float:
        g = self.generator
        x0, context, words = self.batch()
        i = int(torch.randint(0, self.student_steps, (), generator=g))
        sigma, sigma_mid, sigma_next = (s.to(self.device) for s in self.sigmas[2 * i : 2 * i + 3])
        x = x0 + sigma * torch.randn(x0.shape, generator=g).to(self.device)
        with torch.no_grad():
            teacher = self.teacher._denoiser(
                context,
                self.teacher_guidance,
                {},
                text=words,
                guidance_sigma_min=self.teacher_floor,
            )
            steps = ddim(teacher, x, torch.stack([sigma, sigma_mid, sigma_next]), torch.randn)
            x_teacher = [x_next for x_next, _ in steps][-1]
        target = one_step_target(x, x_teacher, sigma, sigma_next)
        eps = self.student._denoiser(context, 1.0, {}, text=words)(x, sigma)
        # max(SNR, 1) with SNR = 1 / sigma^2: the x0 error matters more where little noise is left.
        weight = torch.clamp(1 / sigma**2, min=1.0)
        loss = weight * (x - sigma * eps - target).square().mean()
        for group in self.opt.param_groups:
            group["lr"] = self.args.lr * (1 - self.step / self.args.iterations)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.model.parameters(), 1.0)
        self.opt.step()
        update_ema(self.ema, self.student.model, self.step, self.args.ema_decay)
        self.step += 1
        return loss.item()

    # -- saving ---------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        state = {
            "round": self.round,
            "step": self.step,
            "elapsed": self.elapsed,
            "student": self.student.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "generator": self.generator.get_state(),
        }
        atomic_write(self.args.out / "checkpoint.pt", lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> None:
        # weights_only: a checkpoint is data, never code.
        state = torch.load(
            self.args.out / "checkpoint.pt", map_location=self.device, weights_only=True
        )
        self.round, self.elapsed = state["round"], state["elapsed"]
        if self.round > 0:  # this round's teacher is the last round's student
            previous = self.args.out / "rounds" / f"{2 * self.student_steps}steps"
            self.start_round(SpritePipeline.from_pretrained(previous, device=self.device).model)
        else:
            self.start_round(self.original.model)
        self.step = state["step"]
        self.student.model.load_state_dict(state["student"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])

    def export(self, folder: Path) -> SpritePipeline:
        """The round's EMA student as a model folder that samples with DDIM at its steps."""
        pipe = self.pipeline(copy.deepcopy(self.ema))
        pipe.defaults.update(
            sampler="ddim",
            steps=self.student_steps,
            guidance=1.0,
            guidance_sigma_min=0.0,
            spacing="uniform",
            sampler_steps={"ddim": self.student_steps},
        )
        a = self.args
        teacher_training = self.original.config.get("training", {})
        minutes = round(self.elapsed / 60, 1)
        recipe = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
        del recipe["out"], recipe["resume"]
        rounds_done = self.round + 1
        training = {
            "data": teacher_training.get("data", {"source": a.data}),
            "recipe": {**teacher_training.get("recipe", {}), "distillation": recipe},
            "epochs_done": "-",
            "steps_done": rounds_done * a.iterations,
            "device": str(self.device),
            "hardware": describe(self.device),
            "train_minutes": minutes,
            "total_steps": teacher_training.get("total_steps", 0) + rounds_done * a.iterations,
            "total_minutes": round(teacher_training.get("total_minutes", 0.0) + minutes, 1),
            "credit": data_credit(a.data),
            "note": (
                f"Progressive distillation (Salimans & Ho 2022) of `{a.teacher}` sampled with "
                f"DDIM at {a.teacher_steps} steps and guidance {self.guidance:g}"
                f"{guidance_floor(self.floor if self.guidance != 1 else 0.0, 'sigma')}, "
                f"{rounds_done} round(s) of {a.iterations} steps of batch {a.batch_size} "
                f"(lr {a.lr:g} annealed to 0 per round), down to {self.student_steps} DDIM "
                "steps; the guidance is folded in, so the student runs at guidance 1, one "
                f"network call per step{' (labels, prompts or both)' if self.text else ''}. "
                "Command: `python -m diffusion.distill --teacher "
                f"{a.teacher} --data {a.data} --out {a.out} --teacher-steps {a.teacher_steps} "
                f"--steps {a.steps} --iterations {a.iterations}`."
            ),
        }
        pipe.save_pretrained(folder, extra={"training": training})
        write_model_card(folder)
        return pipe


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    distiller = Distiller(args)
    if args.resume:
        if not (args.out / "checkpoint.pt").exists():
            sys.exit(f"--resume: no checkpoint.pt in {args.out}")
        distiller.load_checkpoint()
        print(f"resumed in round {distiller.round + 1} at step {distiller.step}")
    elif (args.out / "checkpoint.pt").exists():
        sys.exit(f"{args.out} already holds a run: pass --resume or choose another --out")
    log = args.out / "loss.jsonl"
    while distiller.student_steps >= args.steps:
        bar = tqdm(
            total=args.iterations,
            initial=distiller.step,
            desc=f"{2 * distiller.student_steps} -> {distiller.student_steps} steps",
            dynamic_ncols=True,
        )
        losses: list[float] = []
        while distiller.step < args.iterations:
            t0 = time.time()
            losses.append(distiller.train_step())
            distiller.elapsed += time.time() - t0
            bar.update(1)
            if distiller.step % args.save_every == 0 or distiller.step == args.iterations:
                distiller.save_checkpoint()
                row = {"round": distiller.round + 1, "step": distiller.step, "loss": losses[-1]}
                with open(log, "a") as f:
                    f.write(json.dumps(row) + "\n")
        bar.close()
        rounds = args.out / "rounds" / f"{distiller.student_steps}steps"
        student = distiller.export(rounds)
        distiller.export(args.out)
        if distiller.student_steps == args.steps:
            break
        distiller.round, distiller.step = distiller.round + 1, 0
        distiller.start_round(student.model)
        distiller.save_checkpoint()
    print(f"{args.out}: a {distiller.student_steps}-step student")


if __name__ == "__main__":
    main()
