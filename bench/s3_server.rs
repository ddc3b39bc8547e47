//! An S3 server for `bench/upload.sh`: s3s-fs (objects as plain files under ROOT) behind
//! s3s's service with one access key, on 127.0.0.1:PORT, until killed. The same server the
//! offsite tests start in-process.
//!
//!   cargo run --release --example bench_s3_server -- ROOT PORT ACCESS_KEY SECRET_KEY

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, port, access_key, secret_key] = args.as_slice() else {
        return Err("usage: bench_s3_server ROOT PORT ACCESS_KEY SECRET_KEY".into());
    };
    let port: u16 = port.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| format!("s3s-fs root {root}: {e:?}"))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(
            access_key.as_str(),
            secret_key.as_str(),
        ));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on 127.0.0.1:{port}");
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let (socket, _) = listener.accept().await?;
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    })
}
