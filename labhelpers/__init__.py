"""labhelpers: the plumbing every lab imports in one line (`from labhelpers import ...` or `import labhelpers as lh`).

What a lab uses is exported here, module by module (each module's `__all__`), lowest layer first:
profiles, device and precision, model loading, data, prompts, batched generation, metrics with
intervals, results, exercises; then the plumbing of the later labs; last `labhelpers.lessons`, the code
the notebooks themselves write and export with `#@save` (`python -m labhelpers.tools.export`).
Instructor and CI tooling (grading, the lab runner, Colab sync, the export) is in `labhelpers.tools`
and the data generators in `labhelpers.datagen`; no lab imports them.

On import it checks, in a child process and once per machine, whether bf16 matrix multiplies
crash this CPU, and caps oneDNN before torch loads if that makes them safe (see device.py). It also
silences one library deprecation warning that only libraries can act on (named below).
"""

import platform as _platform
import sys as _sys
import warnings as _warnings

from .device import guard_cpu_bf16 as _guard_cpu_bf16

# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` each time it wraps a model (add_adapter,
# and TRL's trainers given a peft_config): a FutureWarning in labs 07, 09 and 10 that no student can act on.
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

if _platform.machine().lower() in {"x86_64", "amd64"}:
    _guard_cpu_bf16()

from .profiles import *  # noqa: E402,F401,F403
from .device import *  # noqa: E402,F401,F403
from .models import *  # noqa: E402,F401,F403
from .data import *  # noqa: E402,F401,F403
from .prompts import *  # noqa: E402,F401,F403
from .generate import *  # noqa: E402,F401,F403
from .metrics import *  # noqa: E402,F401,F403
from .results import *  # noqa: E402,F401,F403
from .exercises import *  # noqa: E402,F401,F403
from .memory import *  # noqa: E402,F401,F403
from .scaling import *  # noqa: E402,F401,F403
from .distributed import *  # noqa: E402,F401,F403
from .train import *  # noqa: E402,F401,F403
from .adapters import *  # noqa: E402,F401,F403
from .benchmarks import *  # noqa: E402,F401,F403
from .rewards import *  # noqa: E402,F401,F403
from .hostile import *  # noqa: E402,F401,F403
from .rl import *  # noqa: E402,F401,F403
from .preferences import *  # noqa: E402,F401,F403
from .preference_data import *  # noqa: E402,F401,F403
from .judges import *  # noqa: E402,F401,F403

_PLUMBING = ("profiles", "device", "models", "data", "prompts", "generate", "metrics", "results", "exercises", "memory",
             "scaling", "distributed", "train", "adapters", "benchmarks", "rewards", "hostile", "rl", "preferences",
             "preference_data", "judges")
__all__ = [name for module in _PLUMBING for name in _sys.modules[f"{__name__}.{module}"].__all__]

# Last: the lesson code the notebooks write and export; it may use any name above through `from labhelpers import`.
from . import lessons as _lessons  # noqa: E402
from .lessons import *  # noqa: E402,F401,F403

__all__ += _lessons.__all__
_duplicates = sorted({n for n in __all__ if __all__.count(n) > 1})
if _duplicates:  # two modules exporting one name: the later would silently shadow the earlier
    raise ImportError(f"labhelpers exports {', '.join(_duplicates)} from two modules; rename one")
