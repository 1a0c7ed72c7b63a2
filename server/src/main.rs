//! `taskplane`: see [`taskplane_server::cli`].

/// jemalloc serves every allocation in the process, SQLite's included (its
/// symbols replace `malloc` and `free`). glibc's allocator spent about a
/// sixth of the SQLite writer's time in `_int_malloc` and
/// `malloc_consolidate`, mostly for the values sqlx copies out of each row
/// and the page buffers of SQLite's temporary b-trees (docs/performance.md,
/// eleventh stop).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    taskplane_server::cli::run().await
}
