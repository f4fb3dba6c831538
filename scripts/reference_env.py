"""The common start of the reference scripts (transformers on CPU, in the venv of
scripts/make-reference.py): offline and quiet, and where the repository and the model file are.
Import it before torch and transformers; it imports neither, so a script can still report their
absence itself."""
import os
from pathlib import Path

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                     ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TQDM_DISABLE", "1")):
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
