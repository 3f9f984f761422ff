/**
 * Longest a GPU tool may run. `nvidia-smi` answers in ~50–500 ms on a healthy driver but can
 * hang for tens of seconds when the driver is wedged; onboarding must not hang with it.
 */
export const GPU_COMMAND_TIMEOUT_MS = 5_000

/** Most output a GPU tool may print before it is cut off (a few KB per device is typical). */
export const GPU_COMMAND_MAX_BUFFER = 1024 * 1024

/** The exact queries run (the and ROCm's documented machine-readable forms). */
export const NVIDIA_SMI_ARGS = ['--query-gpu=index,name,memory.total', '--format=csv,noheader,nounits'] as const
export const ROCM_SMI_ARGS = ['--showproductname', '--showmeminfo', 'vram', '--json'] as const

/** nvidia-smi reports memory.total in MiB with `nounits`. */
export const MIB = 2 ** 20
