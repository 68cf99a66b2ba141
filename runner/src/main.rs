fn main() -> std::process::ExitCode {
    // candle's CPU kernels synchronise their worker threads at every op; for the small matrices of
    // the embedded default that costs more than it gains (measured 3.5 vs 0.5 training steps/s on
    // 2 cores). One thread unless the user asks for more (CANDLE_NUM_THREADS=N for big models).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the first statement of main, before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    runner::cli::main()
}
