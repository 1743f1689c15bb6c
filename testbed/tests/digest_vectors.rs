//! The digest client against the worked examples of RFC 2617 §3.5 and RFC 7616 §3.9.1, and the
//! RFC 2069 (no qop) form.

use testbed::phone::digest::{
    auth_params, compute_response, Algorithm, Authorization, Challenge, DigestError,
};

#[test]
fn rfc2617_example() {
    let r = compute_response(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        "GET",
        "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        Some(("00000001", "0a4f113b")),
    );
    assert_eq!(r, "6629fae49393a05397450978507c4ef1");
}

const RFC7616_CHALLENGE_MD5: &str = r#"Digest
    realm="http-auth@example.org",
    qop="auth, auth-int",
    algorithm=MD5,
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;

#[test]
fn rfc7616_examples_md5_and_sha256() {
    let md5 = Challenge::parse(RFC7616_CHALLENGE_MD5).unwrap();
    assert_eq!(md5.algorithm, Algorithm::Md5);
    assert!(md5.qop_auth);
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let a = Authorization::answer(
        &md5,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        1,
        cnonce,
    );
    assert_eq!(a.response, "8ca523f5e9506fed4657c9700eebdbec");

    let sha =
        Challenge::parse(&RFC7616_CHALLENGE_MD5.replace("algorithm=MD5", "algorithm=SHA-256"))
            .unwrap();
    let a = Authorization::answer(
        &sha,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        1,
        cnonce,
    );
    assert_eq!(
        a.response,
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );

    let v = a.header_value();
    assert!(v.starts_with("Digest username=\"Mufasa\""), "{v}");
    assert!(v.contains("algorithm=SHA-256"), "{v}");
    assert!(
        v.contains(
            "qop=auth, nc=00000001, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\""
        ),
        "{v}"
    );
    assert!(
        v.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""),
        "{v}"
    );
    // The header the client writes reads back as the same parameters.
    let p = auth_params(v.trim_start_matches("Digest "));
    let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("response"), Some(a.response.as_str()));
    assert_eq!(get("uri"), Some("/dir/index.html"));
    assert_eq!(get("nc"), Some("00000001"));
}

#[test]
fn rfc2069_form_without_qop() {
    // RFC 2069: response = H(H(A1):nonce:H(A2)). Vector computed from the definition.
    let c = Challenge::parse(r#"Digest realm="sipdm", nonce="abc123""#).unwrap();
    assert!(!c.qop_auth);
    assert_eq!(c.algorithm, Algorithm::Md5);
    let a = Authorization::answer(
        &c,
        "1001",
        "secret",
        "REGISTER",
        "sip:127.0.0.1",
        1,
        "ignored",
    );
    let ha1 = Algorithm::Md5.hash_hex("1001:sipdm:secret");
    let ha2 = Algorithm::Md5.hash_hex("REGISTER:sip:127.0.0.1");
    assert_eq!(
        a.response,
        Algorithm::Md5.hash_hex(&format!("{ha1}:abc123:{ha2}"))
    );
    assert_eq!(a.qop, None);
    let v = a.header_value();
    assert!(
        !v.contains("qop") && !v.contains("cnonce") && !v.contains("nc="),
        "{v}"
    );
}

#[test]
fn sess_variant_hashes_the_nonces_into_ha1() {
    let plain = compute_response(
        Algorithm::Md5,
        "u",
        "r",
        "p",
        "INVITE",
        "sip:x",
        "n",
        Some(("00000001", "c")),
    );
    let sess = compute_response(
        Algorithm::Md5Sess,
        "u",
        "r",
        "p",
        "INVITE",
        "sip:x",
        "n",
        Some(("00000001", "c")),
    );
    assert_ne!(plain, sess);
    let ha1 = Algorithm::Md5.hash_hex(&format!("{}:n:c", Algorithm::Md5.hash_hex("u:r:p")));
    let ha2 = Algorithm::Md5.hash_hex("INVITE:sip:x");
    assert_eq!(
        sess,
        Algorithm::Md5.hash_hex(&format!("{ha1}:n:00000001:c:auth:{ha2}"))
    );
}

#[test]
fn picks_sha256_when_offered_beside_md5() {
    let md5 = r#"Digest realm="r", nonce="n1", algorithm=MD5, qop="auth""#;
    let sha = r#"Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth""#;
    let odd = r#"Digest realm="r", nonce="n3", algorithm=SHA-512-256, qop="auth""#;
    assert_eq!(Challenge::pick([md5, odd, sha]).unwrap().nonce, "n2");
    assert_eq!(Challenge::pick([odd, md5]).unwrap().nonce, "n1");
    assert_eq!(
        Challenge::pick([odd]),
        Err(DigestError::NoUsableChallenge(1))
    );
}

#[test]
fn bad_challenges_are_errors() {
    assert!(matches!(
        Challenge::parse("Basic realm=\"x\""),
        Err(DigestError::NotDigest(_))
    ));
    assert_eq!(
        Challenge::parse("Digest realm=\"x\""),
        Err(DigestError::Missing("nonce"))
    );
    assert!(matches!(
        Challenge::parse("Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\""),
        Err(DigestError::UnsupportedQop(_))
    ));
    assert!(
        Challenge::parse("Digest realm=\"x\", nonce=\"n\", stale=TRUE")
            .unwrap()
            .stale
    );
    // Escaped quotes inside a quoted string.
    let c = Challenge::parse(r#"Digest realm="a \"quoted\" realm", nonce="n""#).unwrap();
    assert_eq!(c.realm, "a \"quoted\" realm");
}
