//! Rebuilds when migrations change, since `embed_migrations!` compiles them in.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
