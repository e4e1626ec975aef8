use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn policy(yaml: &str) -> Policy {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    parse_policy(&v, "routes[0].policy").unwrap_or_else(|e| panic!("{e}"))
}

fn err(yaml: &str) -> String {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    parse_policy(&v, "routes[4].policy")
        .unwrap_err()
        .to_string()
}

struct Who {
    id: String,
    email: Option<String>,
    groups: Vec<String>,
    claims: crate::policy::Claims,
}

fn alice() -> Who {
    Who {
        id: "alice-id".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["admins".into(), "engineering".into()],
        claims: serde_json::json!({"department": "R&D", "roles": ["reader", "writer"], "level": 3})
            .as_object()
            .unwrap()
            .clone()
            .into(),
    }
}

fn input<'a>(who: Option<&'a Who>) -> Input<'a> {
    Input {
        subject: who.map(|w| Subject {
            user_id: &w.id,
            email: w.email.as_deref(),
            groups: &w.groups,
            name: None,
            claims: &w.claims,
        }),
        method: "GET",
        path: "/admin/panel",
        client_ip: Some("10.1.2.3".parse().unwrap()),
        // Wednesday 2026-11-25 14:30 UTC
        now: Utc.with_ymd_and_hms(2026, 11, 25, 14, 30, 0).unwrap(),
        cors_preflight: false,
        mcp: None,
        client_cert: crate::policy::CertInput::Absent,
        devices: &[],
    }
}

fn allows(yaml: &str, input: &Input<'_>) -> bool {
    policy(&format!("allow:\n  and:\n    - {yaml}\n")).evaluate(input) == Decision::Allow
}

/// Each criterion: one input it accepts, one it refuses.
#[test]
fn every_criterion_true_and_false() {
    let a = alice();
    let i = input(Some(&a));
    let cases: &[(&str, &str)] = &[
        ("accept: true", "reject: true"),
        ("authenticated_user: true", "authenticated_user: false"),
        ("email: alice@example.com", "email: bob@example.com"),
        (
            "email: {is: ALICE@example.com}",
            "email: {ends_with: '@other.com'}",
        ),
        ("domain: example.com", "domain: {is: other.com}"),
        ("user: alice-id", "user: {is: bob-id}"),
        ("claim/department: R&D", "claim/department: Sales"),
        ("claim/roles: writer", "claim/roles: {exclude: writer}"),
        ("claim/level: 3", "claim/level: 4"),
        ("groups: admins", "groups: finance"),
        (
            "groups: {is: [engineering, admins]}",
            "groups: {is: [admins]}",
        ),
        ("groups: {exclude: finance}", "groups: {exclude: admins}"),
        ("http_method: GET", "http_method: {in: [POST, PUT]}"),
        (
            "http_path: {starts_with: /admin}",
            "http_path: {starts_with: /public}",
        ),
        (
            "http_path: {contains: panel}",
            "http_path: {not: {contains: panel}}",
        ),
        (
            "http_path: {ends_with: panel}",
            "http_path: {not_in: [/admin/panel]}",
        ),
        (
            "source_ip: 10.0.0.0/8",
            "source_ip: [192.168.0.0/16, 2001:db8::/32]",
        ),
        ("source_ip: 10.1.2.3", "source_ip: 10.1.2.4"),
        (
            "date: {after: '2026-01-01T00:00:00Z'}",
            "date: {before: '2026-01-01'}",
        ),
        // The forms Pomerium's PPL reference prints: a date-time without a zone (UTC), 12-hour times.
        (
            "date: {after: 2020-01-02T16:20:00, before: 2150-01-02T16:20:00}",
            "date: {before: 2020-01-02T16:20:00}",
        ),
        (
            "time_of_day: {timezone: UTC, after: 2:20PM, before: 4:30PM}",
            "time_of_day: {timezone: UTC, after: 2:40 pm}",
        ),
        ("day_of_week: mon-fri", "day_of_week: sat,sun"),
        ("day_of_week: [wed]", "day_of_week: {is: thu}"),
        (
            "time_of_day: {timezone: UTC, after: '09:00', before: '17:00'}",
            "time_of_day: {timezone: UTC, before: '09:00'}",
        ),
        (
            "time_of_day: {timezone: Asia/Tokyo, after: '22:00', before: '06:00'}",
            "time_of_day: {timezone: America/New_York, after: '12:00'}",
        ),
        ("cors_preflight: false", "cors_preflight: true"),
    ];
    for (yes, no) in cases {
        assert!(allows(yes, &i), "should allow: {yes}");
        assert!(!allows(no, &i), "should refuse: {no}");
    }
    // Tokyo is UTC+9: 14:30 UTC is 23:30 there, inside 22:00–06:00. New York (UTC-5) is 09:30.
    let mut cors = input(Some(&a));
    cors.cors_preflight = true;
    assert!(allows("cors_preflight: true", &cors));
    let v6 = Input {
        client_ip: Some("2001:db8::1".parse().unwrap()),
        ..input(Some(&a))
    };
    assert!(allows("source_ip: 2001:db8::/32", &v6));
    let mapped = Input {
        client_ip: Some("::ffff:10.1.2.3".parse().unwrap()),
        ..input(Some(&a))
    };
    assert!(
        allows("source_ip: 10.0.0.0/8", &mapped),
        "IPv4-mapped IPv6 matches IPv4 rules"
    );
}

#[test]
fn operators_truth_tables() {
    let a = alice();
    let i = input(Some(&a));
    let t = "accept: true";
    let f = "reject: true";
    for (op, x, y, want) in [
        ("and", t, t, true),
        ("and", t, f, false),
        ("and", f, f, false),
        ("or", t, f, true),
        ("or", f, f, false),
        ("or", t, t, true),
        ("not", f, f, true),
        ("not", t, f, false),
        ("not", t, t, false),
        ("nor", t, t, false),
        ("nor", t, f, true),
        ("nor", f, f, true),
    ] {
        let p = policy(&format!("allow:\n  {op}:\n    - {x}\n    - {y}\n"));
        assert_eq!(p.evaluate(&i) == Decision::Allow, want, "{op}({x}, {y})");
    }
}

#[test]
fn deny_wins_and_rules_combine() {
    let a = alice();
    let i = input(Some(&a));
    let p = policy("- allow:\n    or:\n      - domain: example.com\n  deny:\n    or:\n      - email: alice@example.com\n");
    assert_eq!(
        p.evaluate(&i),
        Decision::Deny {
            reasons: vec![Reason::EmailUnauthorized]
        }
    );
    let p = policy(
        "- allow:\n    or: [{email: bob@example.com}]\n- allow:\n    or: [{groups: admins}]\n",
    );
    assert_eq!(p.evaluate(&i), Decision::Allow, "any allow rule suffices");
    let p = policy("allow:\n  and: [{email: bob@example.com}]\n  or: [{groups: admins}]\n");
    assert_eq!(
        p.evaluate(&i),
        Decision::Allow,
        "operators in one action are OR-ed"
    );
    let p = policy("allow:\n  and:\n    - or: [{email: bob@example.com}, {groups: admins}]\n    - http_method: GET\n");
    assert_eq!(p.evaluate(&i), Decision::Allow, "nested operators");
    let p = policy("allow:\n  and: [{email: bob@example.com}, {http_method: POST}]\n");
    assert_eq!(
        p.evaluate(&i),
        Decision::Deny {
            reasons: vec![Reason::EmailUnauthorized, Reason::HttpMethodUnauthorized]
        }
    );
    assert_eq!(
        Policy::default().evaluate(&i),
        Decision::Deny {
            reasons: vec![Reason::Reject]
        },
        "no rule, no access"
    );
}

#[test]
fn anonymous_requests_need_login_only_when_identity_could_change_the_answer() {
    let anon = input(None);
    assert_eq!(
        policy("allow:\n  and: [{authenticated_user: true}]\n").evaluate(&anon),
        Decision::NeedLogin
    );
    assert_eq!(
        policy("allow:\n  and: [{email: a@b.c}]\n").evaluate(&anon),
        Decision::NeedLogin
    );
    assert_eq!(
        policy("allow:\n  and: [{source_ip: 10.0.0.0/8}]\n").evaluate(&anon),
        Decision::Allow
    );
    assert_eq!(
        policy("allow:\n  and: [{source_ip: 192.168.0.0/16}, {email: a@b.c}]\n").evaluate(&anon),
        Decision::Deny {
            reasons: vec![Reason::SourceIpUnauthorized]
        },
        "no sign-in can fix the wrong network"
    );
    assert_eq!(
        policy("allow:\n  or: [{accept: true}]\ndeny:\n  or: [{email: eve@evil.example}]\n")
            .evaluate(&anon),
        Decision::NeedLogin,
        "a deny on identity must be checked"
    );
    let a = alice();
    assert_eq!(
        policy("allow:\n  and: [{email: bob@example.com}]\n").evaluate(&input(Some(&a))),
        Decision::Deny {
            reasons: vec![Reason::EmailUnauthorized]
        },
        "a signed-in user who is refused gets a denial, not a login loop"
    );
    assert!(policy("allow:\n  and: [{groups: x}]\n").needs_identity());
    assert!(
        !policy("allow:\n  and: [{source_ip: 10.0.0.0/8}, {http_method: GET}]\n").needs_identity()
    );
}

#[test]
fn legacy_keys_map_like_pomerium() {
    let a = alice();
    let i = input(Some(&a));
    let users = vec!["bob@example.com".to_string(), "alice-id".to_string()];
    let r = Legacy {
        allowed_users: &users,
        allowed_domains: &[],
        allowed_idp_claims: &[],
        allow_public: false,
        allow_any_authenticated_user: false,
        cors_allow_preflight: false,
    }
    .rule()
    .unwrap();
    assert_eq!(
        Policy { rules: vec![r] }.evaluate(&i),
        Decision::Allow,
        "allowed_users takes a user id"
    );
    let users = vec!["ALICE@example.com".to_string()];
    let r = Legacy {
        allowed_users: &users,
        allowed_domains: &[],
        allowed_idp_claims: &[],
        allow_public: false,
        allow_any_authenticated_user: false,
        cors_allow_preflight: false,
    }
    .rule()
    .unwrap();
    assert_eq!(
        Policy { rules: vec![r] }.evaluate(&i),
        Decision::Allow,
        "or an email"
    );
    let domains = vec!["other.com".to_string()];
    let claims = vec![(
        "department".to_string(),
        vec!["Sales".to_string(), "R&D".to_string()],
    )];
    let r = Legacy {
        allowed_users: &[],
        allowed_domains: &domains,
        allowed_idp_claims: &claims,
        allow_public: false,
        allow_any_authenticated_user: false,
        cors_allow_preflight: false,
    }
    .rule()
    .unwrap();
    assert_eq!(
        Policy { rules: vec![r] }.evaluate(&i),
        Decision::Allow,
        "allowed_idp_claims"
    );
    let none = Legacy {
        allowed_users: &[],
        allowed_domains: &[],
        allowed_idp_claims: &[],
        allow_public: false,
        allow_any_authenticated_user: false,
        cors_allow_preflight: false,
    };
    assert!(none.rule().is_none());
}

#[test]
fn errors_name_the_path_and_the_reason() {
    assert_eq!(
        err("- allow: {or: [{accept: true}]}\n- allow:\n    and:\n      - email: a@b.c\n      - user: x\n      - emial: a@b.c\n"),
        "routes[4].policy[1].allow.and[2]: unknown criterion 'emial'; did you mean email? (known: accept, reject, authenticated_user, email, domain, user, claim/<name>, groups, http_method, http_path, source_ip, cors_preflight, date, day_of_week, time_of_day, client_certificate, invalid_client_certificate, device, mcp_tool, mcp_tool_argument)"
    );
    assert!(err("allow: {xor: []}").contains("routes[4].policy.allow.xor: unknown operator 'xor'"));
    assert!(err("permit: {or: []}").contains("unknown action 'permit'"));
    assert!(err("allow: {or: [{email: {equals: x}}]}")
        .contains("allow.or[0].email.equals: unknown string matcher 'equals'"));
    assert!(
        err("allow: {or: [{groups: {contains: x}}]}").contains("unknown list matcher 'contains'")
    );
    assert!(err("allow: {or: [{source_ip: 10.0.0.300}]}").contains("is not an IP address or CIDR"));
    assert!(err("allow: {or: [{time_of_day: {after: '09:00'}}]}").contains("timezone is required"));
    assert!(
        err("allow: {or: [{time_of_day: {timezone: Mars/Olympus, after: '09:00'}}]}")
            .contains("unknown time zone")
    );
    assert!(err("allow: {or: [{day_of_week: funday}]}").contains("is not a day"));
    assert!(err("allow: {or: [{email: a, user: b}]}").contains("exactly one key"));
    assert!(err("42").contains("expected a rule"));
    // Found by the fuzz property below: a string policy that parses to a string recursed forever.
    assert!(err("'allow'").contains("expected a rule"));
}

#[test]
fn json_and_yaml_forms_agree() {
    let yaml = policy("allow:\n  and:\n    - email: {is: alice@example.com}\n");
    let json = policy(r#"{"allow": {"and": [{"email": {"is": "alice@example.com"}}]}}"#);
    assert_eq!(yaml, json);
    let a = alice();
    let v = serde_yaml_ng::Value::String(r#"[{"allow": {"or": [{"groups": "admins"}]}}]"#.into());
    assert_eq!(
        parse_policy(&v, "p").unwrap().evaluate(&input(Some(&a))),
        Decision::Allow,
        "a policy given as a JSON string"
    );
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(Expr::Criterion(Criterion::Accept)),
        Just(Expr::Criterion(Criterion::Reject)),
        Just(Expr::Criterion(Criterion::AuthenticatedUser)),
    ]
}

fn tree() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_flat_map(|kids| {
            prop_oneof![
                Just(Expr::And(kids.clone())),
                Just(Expr::Or(kids.clone())),
                Just(Expr::Not(kids.clone())),
                Just(Expr::Nor(kids)),
            ]
        })
    })
}

proptest! {
    /// `not` is "none match" and `nor` is "not all match", for signed-in and anonymous inputs.
    #[test]
    fn not_and_nor_agree_with_their_definitions(kids in prop::collection::vec(tree(), 0..5), signed_in in proptest::arbitrary::any::<bool>()) {
        let a = alice();
        let i = input(signed_in.then_some(&a));
        let vals: Vec<Tri> = kids.iter().map(|k| k.eval(&i)).collect();
        let none_match = if vals.contains(&Tri::True) { Tri::False } else if vals.contains(&Tri::Unknown) { Tri::Unknown } else { Tri::True };
        let not_all = if vals.contains(&Tri::False) { Tri::True } else if vals.contains(&Tri::Unknown) { Tri::Unknown } else { Tri::False };
        prop_assert_eq!(Expr::Not(kids.clone()).eval(&i), none_match);
        prop_assert_eq!(Expr::Nor(kids.clone()).eval(&i), not_all);
        if signed_in {
            prop_assert!(vals.iter().all(|v| *v != Tri::Unknown), "nothing is unknown for a signed-in user");
        }
    }
}

/// Random YAML values built from PPL's vocabulary and junk.
fn yaml_value() -> impl Strategy<Value = serde_yaml_ng::Value> {
    use serde_yaml_ng::Value as V;
    let words = prop_oneof![
        Just("allow"),
        Just("deny"),
        Just("and"),
        Just("or"),
        Just("not"),
        Just("nor"),
        Just("email"),
        Just("domain"),
        Just("user"),
        Just("groups"),
        Just("claim/x"),
        Just("claim/"),
        Just("http_method"),
        Just("http_path"),
        Just("source_ip"),
        Just("date"),
        Just("day_of_week"),
        Just("time_of_day"),
        Just("timezone"),
        Just("after"),
        Just("before"),
        Just("is"),
        Just("in"),
        Just("not_in"),
        Just("has"),
        Just("exclude"),
        Just("starts_with"),
        Just("accept"),
        Just("reject"),
        Just("authenticated_user"),
        Just("cors_preflight"),
        Just("10.0.0.0/8"),
        Just("::1/200"),
        Just("mon-fri"),
        Just("25:99"),
        Just("Europe/Paris"),
        Just(""),
        Just("${"),
        Just("\u{0}"),
    ];
    let leaf = prop_oneof![
        words.clone().prop_map(|w| V::String(w.into())),
        proptest::arbitrary::any::<String>().prop_map(V::String),
        proptest::arbitrary::any::<bool>().prop_map(V::Bool),
        proptest::arbitrary::any::<i64>().prop_map(|n| V::Number(n.into())),
        Just(V::Null),
    ];
    leaf.prop_recursive(6, 64, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(V::Sequence),
            prop::collection::vec((words.clone(), inner), 0..4).prop_map(|kv| {
                V::Mapping(
                    kv.into_iter()
                        .map(|(k, v)| (V::String(k.into()), v))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// The parser's fuzz target: any input is either a policy or an error with a path, never a
    /// panic; and whatever parses evaluates without panicking for any user.
    #[test]
    fn parser_never_panics(v in yaml_value(), signed_in in proptest::arbitrary::any::<bool>()) {
        match parse_policy(&v, "routes[0].policy") {
            Ok(p) => {
                let a = alice();
                let _ = p.evaluate(&input(signed_in.then_some(&a)));
            }
            Err(e) => prop_assert!(e.path.starts_with("routes[0].policy"), "{e}"),
        }
    }
}

#[test]
fn device_criterion_needs_a_proven_device_of_the_right_kind() {
    let a = alice();
    let p = policy("allow:\n  and:\n    - device: {type: enclave_only}\n");
    // Anonymous: signing in could change the outcome.
    assert_eq!(p.evaluate(&input(None)), Decision::NeedLogin);
    // Signed in, nothing proven: the reason sends the user to enrol or prove a device.
    assert_eq!(
        p.evaluate(&input(Some(&a))),
        Decision::Deny {
            reasons: vec![Reason::DeviceUnauthenticated]
        }
    );
    let plain = [ProvenDevice {
        id: "cred-1",
        type_id: "any",
        approved: false,
    }];
    let i = Input {
        devices: &plain,
        ..input(Some(&a))
    };
    assert_eq!(
        p.evaluate(&i),
        Decision::Deny {
            reasons: vec![Reason::DeviceUnauthorized]
        }
    );
    let enclave = [ProvenDevice {
        id: "cred-2",
        type_id: "enclave_only",
        approved: true,
    }];
    let i = Input {
        devices: &enclave,
        ..input(Some(&a))
    };
    assert_eq!(p.evaluate(&i), Decision::Allow);
    assert!(allows("device: {is: cred-2, approved: true}", &i));
    assert!(!allows("device: {is: cred-1}", &i));
    assert!(!allows("device: {approved: false}", &i));
    assert!(p.mentions_device());
    assert!(!p.mentions_client_certificate());
}

#[test]
fn certificate_criteria_parse_errors_name_the_field() {
    assert!(
        err("allow:\n  and:\n    - client_certificate: {fingerprint: abc}\n")
            .contains("client_certificate.fingerprint: 'abc' is not a SHA-256 fingerprint")
    );
    assert!(
        err("allow:\n  and:\n    - client_certificate: {spki_hash: abc}\n")
            .contains("client_certificate.spki_hash")
    );
    assert!(
        err("allow:\n  and:\n    - client_certificate: {subject: x}\n")
            .contains("unknown field 'subject'")
    );
    assert!(err("allow:\n  and:\n    - client_certificate: {}\n").contains("needs at least one"));
    assert!(err("allow:\n  and:\n    - device: {kind: x}\n").contains("unknown field 'kind'"));
    let p = policy("deny:\n  or:\n    - invalid_client_certificate: true\n");
    assert!(p.mentions_client_certificate());
    // Without a trusted certificate the deny rule matches, with the reason saying why.
    assert_eq!(
        p.evaluate(&input(None)),
        Decision::Deny {
            reasons: vec![Reason::ClientCertificateRequired]
        }
    );
    let i = Input {
        client_cert: CertInput::Untrusted,
        ..input(None)
    };
    assert_eq!(
        p.evaluate(&i),
        Decision::Deny {
            reasons: vec![Reason::InvalidClientCertificate]
        }
    );
}
