//! The floor of any proxy, for `bench/run.sh` and `bench/cpu.sh`: a byte forwarder on one
//! tokio current-thread runtime that opens one upstream connection per client and copies bytes
//! both ways (`tokio::io::copy_bidirectional`), without reading a single message. No login, no
//! parsing, no audit: what is left is the extra hop itself (two more sockets, two more system
//! calls each way, one more process to wake). Warden's relay doing its whole job is compared
//! with this in the same run.
//!
//! Never use this outside benchmarks: it forwards anything to the upstream. With a client that
//! asks for TLS, the TLS session runs end to end through it (one TLS hop instead of two), so
//! `bench/run.sh` leaves it out when `TLS=1`.
//!
//! Usage: `bench_forward [LISTEN] [UPSTREAM_HOST:PORT]` (defaults `127.0.0.1:6435 127.0.0.1:5432`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .get(1)
        .map_or("127.0.0.1:6435", String::as_str)
        .to_string();
    let upstream = args
        .get(2)
        .map_or("127.0.0.1:5432", String::as_str)
        .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(listen, upstream))?;
    Ok(())
}

async fn serve(listen: String, upstream: String) -> std::io::Result<()> {
    {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!("bench_forward listening on {listen}, upstream {upstream}");
        loop {
            let (mut client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    eprintln!("bench_forward: cannot reach {upstream}");
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    }
}
