//! Bad input to the KV server's client port closes that one connection; everyone else is
//! served on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use raftkv_kv::clerk::ClerkConfig;
use raftkv_kv::protocol::{
    ClientRequest, ClientResponse, Reply, RequestBody, CLIENT_FRAME_BYTES_MAX,
};
use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_transport_tcp::Codec;

/// Sends `bytes` and reads until the server closes the connection.
fn closed_after(addr: &str, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

#[test]
fn malformed_and_oversized_frames_close_only_their_connection() {
    smol::block_on(async {
        let mut cluster = LocalCluster::start(
            SmolRuntime::new(),
            ClusterConfig::new(3, StorageKind::Memory),
        )
        .await
        .unwrap();
        let addr = cluster.addrs()[0].clone();
        // An honest connection opened first stays usable throughout.
        let mut clerk = cluster.clerk(ClerkConfig::default());
        clerk.put("k", "v", None).await.unwrap();

        // A length over the bound: refused before anything is buffered.
        let too_long = (CLIENT_FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        assert!(closed_after(&addr, &too_long));
        // A well-sized frame whose body is not a request.
        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff; 5]);
        assert!(closed_after(&addr, &garbage));
        // A valid request followed by trailing junk inside the frame.
        let mut frame = Vec::new();
        Codec::new(CLIENT_FRAME_BYTES_MAX)
            .encode(
                &ClientRequest {
                    id: 1,
                    body: RequestBody::Status,
                },
                &mut frame,
            )
            .unwrap();
        let body_len = u32::from_be_bytes(frame[..4].try_into().unwrap()) + 1;
        frame[..4].copy_from_slice(&body_len.to_be_bytes());
        frame.push(0);
        assert!(closed_after(&addr, &frame));

        // A well-formed request still gets its answer on a new connection.
        let mut s = TcpStream::connect(&addr).unwrap();
        let mut frame = Vec::new();
        let codec = Codec::new(CLIENT_FRAME_BYTES_MAX);
        codec
            .encode(
                &ClientRequest {
                    id: 42,
                    body: RequestBody::Status,
                },
                &mut frame,
            )
            .unwrap();
        s.write_all(&frame).unwrap();
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; codec.body_len(prefix).unwrap()];
        s.read_exact(&mut body).unwrap();
        let response: ClientResponse = codec.decode_body(&body).unwrap();
        assert_eq!(response.id, 42);
        assert!(matches!(response.reply, Reply::Status(_)));

        assert_eq!(clerk.get("k").await.unwrap().1, 1);
        cluster.close().await;
    });
}
