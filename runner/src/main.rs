fn main() -> std::process::ExitCode {
    one_compute_thread_per_job();
    keep_large_allocations();
    runner::cli::main()
}

/// candle's CPU kernels synchronise their worker threads at every op; for the small matrices of
/// the embedded default that costs more than it gains, and the default runs one job per core.
/// So each job computes on one thread unless the user asks for more with `CANDLE_NUM_THREADS=N`.
/// candle 0.11 sizes its matmul threading by `RAYON_NUM_THREADS` alone, falling back to counting
/// physical cores by reading `/proc/cpuinfo` on every matmul: with neither variable set, training
/// spent a sixth of its time in the kernel and ran 4.2 steps/s instead of 5.3.
fn one_compute_thread_per_job() {
    let threads = std::env::var("CANDLE_NUM_THREADS")
        .or_else(|_| std::env::var("RAYON_NUM_THREADS"))
        .unwrap_or_else(|_| "1".to_string());
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: called first in main, before any other thread exists.
            unsafe { std::env::set_var(var, &threads) };
        }
    }
}

/// glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and
/// returns it on free, so each long-prompt attention matrix (B·H·T² floats, 128 MiB for 8 prompts
/// of 1000 tokens) page-faults in anew: a third of an evaluation's time went to the kernel. Keeping
/// allocations up to 1 GiB in the heap lets them be reused (measured 27% faster on 32-shot cells).
/// Jobs run on worker threads, and a thread's own arena is made of heaps of at most 64 MiB that
/// glibc shrinks eagerly, so bigger tensors there were still mmapped and page-faulted: one arena
/// for all threads (the main heap, which obeys both thresholds) took a 32-shot HatefulMemes cell
/// from 29.8 s to 19.3 s (kernel time 13.6 s to 1.2 s). Tensors are few and large, so threads
/// rarely wait on the shared arena's lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_allocations() {
    const GIB: libc::c_int = 1 << 30;
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, GIB);
        libc::mallopt(libc::M_TRIM_THRESHOLD, GIB);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_allocations() {}
