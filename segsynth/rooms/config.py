"""The rooms stage's config (also used by on-the-fly rooms in ``segsynth synth``) and the
background-library contract."""
from __future__ import annotations

from dataclasses import dataclass, field

from segsynth.config import ConfigError
from segsynth.rooms.prompts import RoomPromptConfig


LIBRARY_FILENAME = "backgrounds.parquet"


# the background-library contract (+ phash, to dedupe across libraries later)
LIBRARY_COLUMNS = ("bg_id", "image", "width", "height", "prompt", "negative_prompt", "seed", "model", "phash")


DEVICES = ("auto", "cuda", "cpu")


DTYPES = ("auto", "float16", "bfloat16", "float32")


# the diffusion model when a config names none: the one configs/rooms.yaml and configs/synth.yaml
# use, which the rooms docs and the GPU benchmark (benchmarks/rooms.py) size for
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass(frozen=True)
class RoomsConfig:
    """Config of ``segsynth rooms`` and of on-the-fly rooms in ``segsynth synth``."""

    out: str = "outputs/rooms"                       # folder or URI of the background library
    count: int = 1000                                # prompts to run (kept rooms are fewer: gate)
    seed: int = 0                                    # run seed: prompt i and its noise depend on (seed, i)
    size: int = 512                                  # square images, pixels (multiple of 8)
    steps: int = 30                                  # denoising steps
    guidance_scale: float = 7.5                      # classifier-free guidance
    model: str = DEFAULT_MODEL                       # local pipeline folder or hub id
    device: str = "auto"                             # auto: cuda when the actor has a GPU, else cpu
    dtype: str = "auto"                              # auto: float16 on GPU, float32 on CPU
    num_gpus: float = 1.0                            # per actor; 0 runs the actors on CPU
    num_cpus: float = 1.0                            # per actor
    workers: int = 1                                 # actor pool size (one pipeline per actor)
    batch_size: int = 4                              # prompts per diffusion call
    # prompts per part file (OUT/parts): a failed or cancelled run, run again, generates only the
    # parts not written; 64 rooms at 512 px and 30 steps are minutes of one GPU
    part_size: int = 64
    write_jpegs: bool = False                        # also write OUT/jpg/<bg_id>.jpg
    jpeg_quality: int = 92
    blank_min_std: float = 4.0                       # gray std below this: near-uniform, dropped
    blank_black_level: float = 10.0                  # mean gray below this: black, dropped
    dedupe_max_distance: int = 4                     # phash bits; closer to a kept room: dropped
    prompts: RoomPromptConfig = field(default_factory=RoomPromptConfig)

    def check_inputs(self) -> None:
        if self.count < 1:
            raise ConfigError(f"count must be at least 1, got {self.count}")
        if self.size < 64 or self.size % 8:
            raise ConfigError(f"size must be a multiple of 8 and at least 64, got {self.size}; e.g. 512")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.workers < 1 or self.batch_size < 1 or self.part_size < 1:
            raise ConfigError(f"workers, batch_size and part_size must be at least 1, got {self.workers}, "
                              f"{self.batch_size} and {self.part_size}")
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise ConfigError("num_gpus and num_cpus per actor must not be negative")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {list(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.device == "cuda" and self.num_gpus == 0:
            raise ConfigError("device: cuda needs num_gpus > 0 per actor (Ray hides GPUs from actors that reserve none)")
        if self.device == "cpu" and self.dtype == "float16":
            raise ConfigError("dtype: float16 on device: cpu is not supported; use dtype: auto or float32")
        if not self.model:
            raise ConfigError(f"model is empty; set a local pipeline folder or a hub id, e.g. {DEFAULT_MODEL}")
        if not 0 <= self.dedupe_max_distance <= 64:
            raise ConfigError(f"dedupe_max_distance is a number of bits of a 64-bit hash, got {self.dedupe_max_distance}")

    @property
    def actor_device(self) -> str:
        """The device an actor uses: ``auto`` means cuda only when the actor reserves a GPU."""
        if self.device == "auto":
            return "auto" if self.num_gpus > 0 else "cpu"
        return self.device
