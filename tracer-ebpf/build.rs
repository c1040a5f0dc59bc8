use which::which;

/// Rebuild the programs when bpf-linker changes (it is what links them).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
