//! Baseline size probe: a tokio current-thread runtime running one task.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = tokio::spawn(async { std::env::args().count() }).await.unwrap_or_default();
    println!("{args}");
}
