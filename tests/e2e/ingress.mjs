// The ingresses of the forward-auth scenarios: nginx with `auth_request` and Caddy with
// `forward_auth`, configured as docs/forward-auth.md says, in front of the echo upstream.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Waits until something accepts connections on `port`.
async function listening(port, what) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); r(true); });
      c.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${what} did not start on ${port}`);
}

/// The ingresses of the forward-auth scenarios, as docs/forward-auth.md configures them: nginx
/// with `auth_request` (fa1, fa2, fadeny) and Caddy with `forward_auth` (fc1), each serving the
/// echo upstream and asking Vallum (through the balancer) about every request.
export async function startIngresses(dir, certs, lbPort, echoPort, log, freePort) {
  const nginxPort = await freePort();
  const caddyPort = await freePort();
  const root = process.getuid?.() === 0;
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((t) => `${t}_temp_path ${dir}/nginx-${t};`).join('\n  ');
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `${root ? 'user root;' : ''}
worker_processes 1;
error_log ${dir}/nginx-error.log info;
pid ${dir}/nginx.pid;
events { worker_connections 256; }
http {
  access_log ${dir}/nginx-access.log;
  ${temp}
  server {
    listen 127.0.0.1:${nginxPort} ssl;
    server_name fa1.localhost fa2.localhost fadeny.localhost;
    ssl_certificate ${certs.cert};
    ssl_certificate_key ${certs.key};
    location = /_vallum {
      internal;
      proxy_pass https://127.0.0.1:${lbPort}/verify?uri=$scheme://$http_host$request_uri;
      proxy_set_header Host fwdauth.localhost;
      proxy_ssl_server_name on;
      proxy_ssl_name fwdauth.localhost;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Real-IP $remote_addr;
    }
    location @sign_in {
      return 302 https://fwdauth.localhost:${lbPort}/?uri=$scheme://$http_host$request_uri;
    }
    location /.pomerium/ {
      proxy_pass https://127.0.0.1:${lbPort};
      proxy_set_header Host $http_host;
      proxy_ssl_server_name on;
      proxy_ssl_name $host;
    }
    location / {
      auth_request /_vallum;
      error_page 401 = @sign_in;
      auth_request_set $jwt $upstream_http_x_pomerium_jwt_assertion;
      auth_request_set $email $upstream_http_x_pomerium_claim_email;
      proxy_set_header X-Pomerium-Jwt-Assertion $jwt;
      proxy_set_header X-Pomerium-Claim-Email $email;
      proxy_set_header Host $http_host;
      proxy_pass http://127.0.0.1:${echoPort};
    }
  }
}
`);
  const nginx = spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'ignore' });
  nginx.on('error', (e) => log(`cannot start nginx (${e.message}); apt-get install nginx`));
  fs.writeFileSync(path.join(dir, 'Caddyfile'), `{
  admin off
  skip_install_trust
  storage file_system ${dir}/caddy
  http_port ${await freePort()}
  https_port ${caddyPort}
  auto_https disable_redirects
}
https://fc1.localhost:${caddyPort} {
  tls ${certs.cert} ${certs.key}
  handle /.pomerium/* {
    reverse_proxy https://127.0.0.1:${lbPort} {
      header_up Host {http.request.hostport}
      transport http {
        tls_trusted_ca_certs ${certs.caFile}
        tls_server_name fc1.localhost
      }
    }
  }
  handle {
    forward_auth https://127.0.0.1:${lbPort} {
      uri /
      header_up Host fwdauth.localhost
      header_up X-Forwarded-Host {http.request.hostport}
      copy_headers X-Pomerium-Jwt-Assertion X-Pomerium-Claim-Email
      transport http {
        tls_trusted_ca_certs ${certs.caFile}
        tls_server_name fwdauth.localhost
      }
    }
    reverse_proxy 127.0.0.1:${echoPort} {
      header_up Host {http.request.hostport}
    }
  }
}
`);
  const caddyLog = fs.openSync(path.join(dir, 'caddy.log'), 'w');
  const caddy = spawn('caddy', ['run', '--config', path.join(dir, 'Caddyfile'), '--adapter', 'caddyfile'],
    { stdio: ['ignore', caddyLog, caddyLog], env: { ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir } });
  caddy.on('error', (e) => log(`cannot start caddy (${e.message}); apt-get install caddy`));
  await listening(nginxPort, 'nginx');
  await listening(caddyPort, 'caddy');
  log(`ingresses: nginx on ${nginxPort}, caddy on ${caddyPort}`);
  const read = (f) => (fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f), 'utf8') : '');
  return {
    nginxPort, caddyPort,
    logs: () => `--- nginx error log ---\n${read('nginx-error.log')}\n--- nginx access log ---\n${read('nginx-access.log')}\n--- caddy log ---\n${read('caddy.log')}`,
    close: () => { nginx.kill('SIGKILL'); caddy.kill('SIGKILL'); },
  };
}

