//! `raw-pingora LISTEN UPSTREAM THREADS [h2c]`: forwards every request to one upstream, nothing
//! else. With `h2c`: HTTP/2 with prior knowledge on both sides (clients and upstream), up to 100
//! streams on each upstream connection, as Vallum does for `h2c://` upstreams.
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Raw(String, bool);

#[async_trait]
impl ProxyHttp for Raw {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> pingora_core::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.0.as_str(), false, String::new());
        if self.1 {
            peer.options.alpn = pingora_core::protocols::ALPN::H2;
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = (args.get(1).cloned().unwrap_or_default(), args.get(2).cloned().unwrap_or_default());
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf { threads, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let h2c = args.get(4).is_some_and(|a| a == "h2c");
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Raw(upstream, h2c));
    if h2c {
        let mut options = pingora_core::apps::HttpServerOptions::default();
        options.h2c = true;
        svc.app_logic_mut().expect("a new service").server_options = Some(options);
    }
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
