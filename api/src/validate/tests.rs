use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Values generated from a rule's own pattern (anchors stripped).
fn from_pattern(rule: &Rule) -> impl Strategy<Value = String> {
    let p = rule.pattern.expect("a pattern");
    let inner = p.strip_prefix('^').unwrap().strip_suffix('$').unwrap();
    proptest::string::string_regex(inner).unwrap()
}

/// Asserts that `parse` accepts each of `ok` and refuses each of `bad`.
fn accepts_and_refuses<T, E>(parse: impl Fn(&str) -> Result<T, E>, ok: &[&str], bad: &[&str]) {
    for ok in ok {
        assert!(parse(ok).is_ok(), "{ok}");
    }
    for bad in bad {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

/// Every value `rule`'s pattern generates (2,000 of them) matches the CRD's
/// `crd_pattern`, and `parse` turns it into a value that `fits`.
fn admitted_values_parse<T: std::fmt::Debug>(
    rule: &Rule,
    crd_pattern: &str,
    parse: impl Fn(&str) -> Result<T, FieldError>,
    fits: impl Fn(&T) -> bool,
) {
    let crd_pattern = crd(crd_pattern);
    proptest!(config(2000), |(v in from_pattern(rule))| {
        prop_assert!(crd_pattern.is_match(&v), "{v} is not admitted by the CRD's {crd_pattern}");
        let parsed = parse(&v).map_err(|e| TestCaseError::fail(format!("{v}: {e:?}")))?;
        prop_assert!(fits(&parsed), "{v} parses to {parsed:?}");
    });
}

fn crd(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap()
}

#[test]
fn every_pattern_compiles_and_is_anchored() {
    for rule in [
        KUBE_NAME,
        PACK_NAME,
        USER_ID,
        GPU_REF,
        CPU,
        SIZE,
        DURATION,
        EMAIL,
        SESSION_CURSOR,
        USERS_CURSOR,
        EVENT_TOKEN,
    ] {
        let p = rule.pattern.unwrap();
        assert!(p.starts_with('^') && p.ends_with('$'), "{p}");
        assert!(
            !p.contains(r"\s") && !p.contains(r"\d") && !p.contains(r"\w"),
            "{p}"
        );
        assert!(rule.matches(rule.example), "{} rejects its example", p);
        compiled(p);
    }
    assert!(NEW_PASSWORD.matches(NEW_PASSWORD.example));
}

#[test]
fn cpu_values_the_pattern_admits_run_on_the_node_agent() {
    // Docker takes 0.01 CPU (10,000,000 nano-CPUs) and up.
    admitted_values_parse(
        &CPU,
        medforge_crds::schema::QUANTITY_PATTERN,
        |v| cpu("cpu", v),
        |nanos| *nanos >= 10_000_000,
    );
    accepts_and_refuses(
        |v| cpu("cpu", v),
        &["2", "0.5", "0.01", "1.25", "500m", "10m", "9999.999"],
        &[
            "0", "0.0", "0.001", "1m", "9m", "-1", "+1", "1e3", "1.", ".5", "2 ", "1Gi", "",
        ],
    );
}

#[test]
fn sizes_the_pattern_admits_run_on_the_node_agent() {
    admitted_values_parse(
        &SIZE,
        medforge_crds::schema::QUANTITY_PATTERN,
        |v| size("memory", v),
        |bytes| *bytes >= MIN_SIZE_BYTES,
    );
    accepts_and_refuses(
        |v| size("memory", v),
        &[
            "6Mi", "7M", "16Gi", "1.5Gi", "2G", "1Ti", "10000Ki", "10000000",
        ],
        &[
            "5Mi", "6M", "1", "0", "0.5Gi", "1e9", "-1Gi", "1Ei", "9999Ki", "16gi",
        ],
    );
}

#[test]
fn durations_the_pattern_admits_parse() {
    admitted_values_parse(
        &DURATION,
        medforge_crds::schema::DURATION_PATTERN,
        |v| duration("idle_timeout", v),
        |_| true,
    );
    accepts_and_refuses(
        |v| duration("d", v),
        &[
            "30m", "2h", "1h30m", "90s", "1.5h", "100ms", "3us", "5ns", "1h0m0s",
        ],
        &[
            "",
            "30",
            "m",
            "1d",
            "1.h",
            ".5h",
            "-1h",
            "1h ",
            "1H",
            "30mm",
            "1µs",
            "1s1s1s1s1s",
            "1234567h",
        ],
    );
}

#[test]
fn names_follow_kubernetes_and_the_crds() {
    let gpu_uuid = crd(medforge_crds::schema::GPU_UUID_PATTERN);
    proptest!(config(500), |(v in from_pattern(&GPU_REF))| {
        prop_assert!(v.parse::<u32>().is_ok() || gpu_uuid.is_match(&v), "{v}");
    });
    proptest!(config(500), |(v in from_pattern(&KUBE_NAME).prop_filter("length", |v| v.len() <= 253))| {
        prop_assert!(KUBE_NAME.matches(&v));
        prop_assert!(v.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-')));
    });
    for ok in [
        "node-a",
        "e2e-node",
        "a",
        "a.b-c.d",
        "0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
    ] {
        assert!(KUBE_NAME.matches(ok), "{ok}");
    }
    let long = "a".repeat(254);
    for bad in [
        "", "Node", "a_b", "-a", "a-", "a..b", ".a", "é", "a\u{0}b", "a b", "a/b", &long,
    ] {
        assert!(!KUBE_NAME.matches(bad), "{bad:?}");
    }
    for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
        assert!(!PACK_NAME.matches(bad), "{bad:?}");
    }
}

#[test]
fn emails() {
    assert_eq!(
        email("email", "  Ada@Example.ORG ").unwrap(),
        "ada@example.org"
    );
    assert_eq!(email("email", "a@b.c").unwrap(), "a@b.c");
    for bad in [
        "",
        "ada",
        "@example.org",
        "ada@",
        "ada@example",
        "ada@.org",
        "ada@example.",
        "a da@example.org",
        "ada@@example.org",
        "adé@example.org",
        "ada@exa\u{0}mple.org",
        "\u{a0}ada@example.org",
    ] {
        assert!(email("email", bad).is_err(), "{bad:?}");
    }
    let long = format!("{}@example.org", "a".repeat(250));
    assert!(email("email", &long).is_err());
    proptest!(config(500), |(v in from_pattern(&EMAIL).prop_filter("length", |v| v.len() <= 254))| {
        let e = email("email", &v).map_err(|e| TestCaseError::fail(format!("{v:?}: {e:?}")))?;
        let (local, domain) = e.split_once('@').unwrap();
        prop_assert!(!local.is_empty() && domain.contains('.'));
        prop_assert!(!domain.starts_with('.') && !domain.ends_with('.'));
    });
}

#[test]
fn passwords_count_characters() {
    assert!(NEW_PASSWORD.matches(&"é".repeat(1024)));
    assert!(!NEW_PASSWORD.matches(&"é".repeat(1025)));
    assert!(!NEW_PASSWORD.matches("seven77"));
    assert!(PASSWORD.matches("x"));
    assert!(!PASSWORD.matches(""));
}

/// The api reads quantities and durations with `medforge_crds::quantity` only
/// and adds its policy (the published notation and range): a value the api
/// accepts is one the CRD schema accepts and the parsers read, a value the CRD
/// schema refuses the api refuses too, and the everyday values within the
/// policy are accepted by both.
#[test]
fn the_api_and_the_crd_schema_agree_on_quantities_and_durations() {
    let quantity_schema = crd(medforge_crds::schema::QUANTITY_PATTERN);
    let duration_schema = crd(medforge_crds::schema::DURATION_PATTERN);
    struct Case<'a> {
        what: &'a str,
        schema: &'a Regex,
        api_accepts: fn(&str) -> bool,
        both_accept: &'a [&'a str],
        both_refuse: &'a [&'a str],
    }
    let cases = [
        Case {
            what: "cpu",
            schema: &quantity_schema,
            api_accepts: |v| cpu("cpu", v).is_ok(),
            both_accept: &["2", "500m", "0.5", "1.25", "10m", "9999.999"],
            both_refuse: &["lots", "1.2.3", "12XB", "Gi", "", "2 ", "1e", "0x10"],
        },
        Case {
            what: "size",
            schema: &quantity_schema,
            api_accepts: |v| size("memory", v).is_ok(),
            both_accept: &["16Gi", "6Mi", "1.5Gi", "2G", "1Ti", "10000Ki", "10000000"],
            both_refuse: &["16gi", "abc", "1XB", "Gi", "", "1.5.Gi", "16 Gi"],
        },
        Case {
            what: "duration",
            schema: &duration_schema,
            api_accepts: |v| duration("d", v).is_ok(),
            both_accept: &["30m", "1h30m", "1.5h", "100ms", "90s", "5ns", "3us"],
            both_refuse: &["1d", "10", "h", "1µs", "", "-1h", "1.h", "1H"],
        },
    ];
    for Case {
        what,
        schema,
        api_accepts,
        both_accept,
        both_refuse,
    } in cases
    {
        for v in both_accept {
            assert!(
                schema.is_match(v),
                "{what} {v:?}: the CRD schema refuses it"
            );
            assert!(api_accepts(v), "{what} {v:?}: the api refuses it");
        }
        for v in both_refuse {
            assert!(
                !schema.is_match(v),
                "{what} {v:?}: the CRD schema accepts it"
            );
            assert!(!api_accepts(v), "{what} {v:?}: the api accepts it");
        }
    }
}
