//! `raw-pingora LISTEN UPSTREAM THREADS`: forwards every request to one upstream, nothing else.
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Raw(String);

#[async_trait]
impl ProxyHttp for Raw {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = (args.get(1).cloned().unwrap_or_default(), args.get(2).cloned().unwrap_or_default());
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf { threads, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Raw(upstream));
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
