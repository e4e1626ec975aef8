//! A private DNS server on loopback for the tests: answers A queries from a table the test
//! changes while the gateway runs (NXDOMAIN for names it does not hold), over UDP and TCP.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

type Table = Arc<Mutex<HashMap<String, (Vec<Ipv4Addr>, u32)>>>;

pub struct DnsServer {
    pub addr: SocketAddr,
    table: Table,
    /// A queries received.
    pub queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let table: Table = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let (t, q) = (Arc::clone(&table), Arc::clone(&queries));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(reply) = answer(&buf[..n], &t, &q) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        DnsServer {
            addr,
            table,
            queries,
            task,
        }
    }

    /// `name` answers these addresses with this TTL from now on.
    pub fn set(&self, name: &str, ips: &[[u8; 4]], ttl: u32) {
        let ips = ips.iter().map(|o| Ipv4Addr::from(*o)).collect();
        self.table
            .lock()
            .unwrap()
            .insert(name.trim_end_matches('.').to_ascii_lowercase(), (ips, ttl));
    }

    /// `name` is unknown from now on (NXDOMAIN).
    pub fn remove(&self, name: &str) {
        self.table.lock().unwrap().remove(name);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &[u8], table: &Table, queries: &AtomicUsize) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    reply.add_queries(msg.queries().to_vec());
    let table = table.lock().unwrap();
    for q in msg.queries() {
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if q.query_type() == RecordType::A {
            queries.fetch_add(1, Ordering::SeqCst);
        }
        match table.get(&name) {
            None => {
                reply.set_response_code(ResponseCode::NXDomain);
            }
            Some((ips, ttl)) if q.query_type() == RecordType::A => {
                for ip in ips {
                    reply.add_answer(Record::from_rdata(q.name().clone(), *ttl, RData::A(A(*ip))));
                }
            }
            // Known name, other type (AAAA): no records, no error.
            Some(_) => {}
        }
    }
    reply.to_vec().ok()
}
