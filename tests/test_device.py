import torch

from diffusion.device import CPU_BF16_MIN_BATCH, bf16_pays, cpu_name, describe

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx512f avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx512f avx512_bf16
"""


def test_cpu_name_reads_the_model_and_its_bf16_feature(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpu_name(str(info)) == "AMD EPYC 9R14 with AVX512-BF16"
    info.write_text(CPUINFO.replace("avx512_bf16", "amx_bf16 avx512_bf16"))
    assert cpu_name(str(info)) == "AMD EPYC 9R14 with AMX"
    info.write_text(CPUINFO.replace(" avx512_bf16", ""))
    assert cpu_name(str(info)) == "AMD EPYC 9R14"
    assert cpu_name(str(tmp_path / "missing")) != ""


def test_a_cpu_card_names_the_cpu_its_cores_and_threads():
    text = describe(torch.device("cpu"))
    assert text.startswith(f"CPU ({cpu_name()}), ")
    assert text.endswith(f"{torch.get_num_threads()} torch threads")


def test_bf16_pays_on_a_gpu_always_and_on_a_cpu_from_a_batch_of_a_few():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert not bf16_pays(cpu, 1)
    assert not bf16_pays(cpu, CPU_BF16_MIN_BATCH - 1)
    assert bf16_pays(cpu, CPU_BF16_MIN_BATCH)
    assert bf16_pays(gpu, 1)
