//! Signing in with GitHub (`idp_provider: github`, OAuth 2.0 and the REST API) through the
//! running gateway, against an in-process GitHub that also misbehaves: teams as groups, the
//! primary verified e-mail, a revoked token ending the session, a rate limit, a refused code.

use crate::signin::{Browser, COOKIE_SECRET, SHARED_SECRET};
use crate::support::github::{GitHub, Mode};
use crate::support::{free_port, Gateway, Upstream};

struct Env {
    gh: GitHub,
    gw: Gateway,
    _up: Upstream,
}

async fn start(extra: &str) -> Env {
    let gh = GitHub::start().await;
    let up = Upstream::echo("app").await;
    let port = free_port();
    let u = up.url();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nauthenticate_service_url: http://authenticate.localhost:{port}\n\
         {gh}cookie_secret: {COOKIE_SECRET}\nshared_secret: {SHARED_SECRET}\nsignin_rate_limit: 0\n\
         jwt_claims_headers: [email, user, groups]\n{extra}\
         routes:\n  - from: http://platform.localhost\n    to: {u}\n    pass_identity_headers: true\n    policy:\n      allow:\n        and:\n          - groups: {{has: acme/platform}}\n\
         \x20 - from: http://marketing.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - groups: {{has: acme/marketing}}\n\
         \x20 - from: http://mail.localhost\n    to: {u}\n    policy:\n      allow:\n        and:\n          - email: {{is: octocat@example.com}}\n",
        gh = gh.config(),
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    Env { gh, gw, _up: up }
}

impl Env {
    fn browser(&self) -> Browser {
        let addr = self.gw.addr();
        let names: Vec<String> = ["platform", "marketing", "mail", "authenticate"]
            .iter()
            .map(|h| format!("{h}.localhost"))
            .collect();
        Browser::resolving(&names.iter().map(|n| (n.as_str(), addr)).collect::<Vec<_>>())
    }

    fn url(&self, host: &str) -> String {
        format!("http://{host}.localhost:{}/", self.gw.port)
    }
}

#[tokio::test]
async fn teams_are_groups_and_the_verified_email_is_the_email() {
    let env = start("").await;
    let b = env.browser();
    let (r, hops) = b.browse(&env.url("platform")).await;
    assert_eq!(r.status, 200, "{hops:#?}\n{}", r.body);
    assert!(
        hops.iter()
            .any(|h| h.starts_with(&format!("{}/login/oauth/authorize", env.gh.url()))),
        "signed in at GitHub: {hops:#?}"
    );
    let echo = r.echo();
    assert_eq!(
        echo.header("x-pomerium-claim-email"),
        Some("octocat@example.com")
    );
    assert_eq!(echo.header("x-pomerium-claim-user"), Some("octocat"));
    assert_eq!(
        echo.header("x-pomerium-claim-groups"),
        Some("acme/platform,acme/sre")
    );
    assert!(echo.header("x-pomerium-jwt-assertion").is_some());
    // Not in the marketing team.
    let (r, _) = b.browse(&env.url("marketing")).await;
    assert_eq!(r.status, 403);
    // The e-mail rule sees the primary verified address.
    let (r, _) = b.browse(&env.url("mail")).await;
    assert_eq!(r.status, 200);

    // Another user, another team.
    env.gh.login_as("hubot");
    let hubot = env.browser();
    assert_eq!(hubot.browse(&env.url("marketing")).await.0.status, 200);
    assert_eq!(hubot.browse(&env.url("platform")).await.0.status, 403);
}

#[tokio::test]
async fn without_a_verified_primary_email_there_is_no_email() {
    let env = start("").await;
    env.gh.set_mode(Mode::NoVerifiedEmail);
    let b = env.browser();
    let (r, _) = b.browse(&env.url("platform")).await;
    assert_eq!(r.status, 200, "teams still count");
    assert_eq!(r.echo().header("x-pomerium-claim-email").unwrap_or(""), "");
    let (r, _) = b.browse(&env.url("mail")).await;
    assert_eq!(
        r.status, 403,
        "an unverified address satisfies no e-mail rule"
    );
}

#[tokio::test]
async fn a_rate_limited_github_fails_the_sign_in_with_a_retry_and_no_session() {
    let env = start("").await;
    env.gh.set_mode(Mode::RateLimited);
    let b = env.browser();
    let (r, _) = b.browse(&env.url("platform")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("try again"), "{}", r.body);
    assert!(env.gw.log_has("rate-limited"), "{}", env.gw.log());
    env.gh.set_mode(Mode::Honest);
    let (r, _) = b.browse(&env.url("platform")).await;
    assert_eq!(r.status, 200, "signs in once GitHub answers again");
}

#[tokio::test]
async fn a_refused_code_is_a_failed_sign_in() {
    let env = start("").await;
    // The gateway's secret is not the one GitHub has: every code is refused.
    let wrong = GitHub::start().await;
    let port = free_port();
    let text = format!(
        "address: 127.0.0.1:{port}\ninsecure_server: true\nauthenticate_service_url: http://authenticate.localhost:{port}\n\
         idp_provider: github\nidp_provider_url: {}\nidp_client_id: vallum-gh\nidp_client_secret: not-the-secret\n\
         cookie_secret: {COOKIE_SECRET}\nshared_secret: {SHARED_SECRET}\nsignin_rate_limit: 0\n\
         routes:\n  - from: http://platform.localhost\n    to: http://127.0.0.1:9\n    allow_any_authenticated_user: true\n",
        wrong.url()
    );
    let gw = Gateway::start_with(port, &text, &[]).await;
    let b = Browser::resolving(&[
        ("platform.localhost", gw.addr()),
        ("authenticate.localhost", gw.addr()),
    ]);
    let (r, _) = b
        .browse(&format!("http://platform.localhost:{port}/"))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(gw.log_has("bad_verification_code"), "{}", gw.log());
    drop(env);
}

#[tokio::test]
async fn a_revoked_token_ends_the_session_and_team_changes_reach_policy() {
    let env = start("idp_refresh_claims_interval: 1s\n").await;
    let b = env.browser();
    assert_eq!(b.browse(&env.url("platform")).await.0.status, 200);
    assert_eq!(b.browse(&env.url("marketing")).await.0.status, 403);
    // Moved to marketing at GitHub: the next claims refresh moves the session too.
    env.gh.set_teams("octocat", &[("acme", "marketing")]);
    env.gw
        .eventually("the new team reaches policy", || async {
            b.browse(&env.url("marketing")).await.0.status == 200
        })
        .await;
    // The app's authorization revoked at GitHub: the session ends.
    env.gh.revoke_tokens();
    env.gw
        .eventually("the session ends", || async {
            let (r, _) = b.get(&env.url("marketing")).await;
            r.status == 302
        })
        .await;
    assert!(env.gh.api_calls() > 0);
}
