/// mimalloc instead of the system allocator: the server allocates on one thread what another
/// frees (requests, events, deliveries), where glibc's malloc spent a fifth of the runtime's
/// samples under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    herald::cli::main()
}
