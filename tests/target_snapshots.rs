//! Snapshot tables of targets, anchor lists and etcd service names: the exact error for each bad
//! form, and the parsed form of good ones. A change in a message or a parse shows up as a diff in
//! `snapshots/`.

use std::fmt::Write as _;

use anchorage::address::Address;
use anchorage::anchor::{AnchorList, EtcdService};
use anchorage::target::{BUILTIN_SCHEMES, Target};

/// One row of a table: what kind of text it is, and the text.
#[derive(Debug, Clone, Copy)]
enum Input {
    /// A whole target, checked against its resolver's endpoint grammar as the CLI does.
    Target(&'static str),
    /// A `pass` endpoint parsed directly.
    List(&'static str),
    /// An `etcd` endpoint parsed directly.
    Service(&'static str),
}

/// The expanded addresses, abbreviated in the middle when there are more than eight.
fn addresses(expanded: &[Address]) -> String {
    let shown: Vec<String> = if expanded.len() > 8 {
        let head = expanded[..3].iter().map(ToString::to_string);
        let tail = expanded[expanded.len() - 1..].iter().map(ToString::to_string);
        head.chain([format!("... {} more ...", expanded.len() - 4)]).chain(tail).collect()
    } else {
        expanded.iter().map(ToString::to_string).collect()
    };
    format!("{} connection(s): {}", expanded.len(), shown.join(", "))
}

fn describe_list(list: &AnchorList) -> Vec<String> {
    vec![format!("pass list:  {list}"), format!("expands to: {}", addresses(&list.expand()))]
}

fn describe_service(service: &EtcdService) -> Vec<String> {
    vec![format!(
        "etcd service: {:?}, {} connection(s) per address (canonical {service})",
        service.name(),
        service.connections()
    )]
}

/// The parsed form of `input` as readable lines, or its error message.
fn describe(input: Input) -> Result<Vec<String>, String> {
    match input {
        Input::Target(text) => {
            let t =
                Target::parse(text, |s| BUILTIN_SCHEMES.contains(&s)).map_err(|e| e.to_string())?;
            let mut lines = vec![
                format!(
                    "parsed:     scheme={} authority={:?} endpoint={:?} fallback={}",
                    t.scheme(),
                    t.authority(),
                    t.endpoint(),
                    t.is_fallback()
                ),
                format!("canonical:  {t}"),
            ];
            match t.scheme() {
                "pass" => {
                    let list: AnchorList = t.endpoint().parse().map_err(|e| format!("{e}"))?;
                    lines.extend(describe_list(&list));
                }
                "etcd" => {
                    let service: EtcdService = t.endpoint().parse().map_err(|e| format!("{e}"))?;
                    lines.extend(describe_service(&service));
                }
                _ => {}
            }
            Ok(lines)
        }
        Input::List(text) => {
            let list: AnchorList = text.parse().map_err(|e| format!("{e}"))?;
            Ok(describe_list(&list))
        }
        Input::Service(text) => {
            let service: EtcdService = text.parse().map_err(|e| format!("{e}"))?;
            Ok(describe_service(&service))
        }
    }
}

fn heading(input: Input) -> String {
    match input {
        Input::Target(text) => format!("target  {text:?}"),
        Input::List(text) => format!("list    {text:?}"),
        Input::Service(text) => format!("service {text:?}"),
    }
}

/// Renders the table of inputs that must be rejected, one `input / -> error` pair per row.
fn bad_table(rows: &[Input]) -> String {
    let mut out = String::new();
    for &input in rows {
        match describe(input) {
            Err(message) => {
                let _ = writeln!(out, "{}\n  -> {message}\n", heading(input));
            }
            Ok(lines) => panic!("{input:?} must be rejected, but parsed as {lines:?}"),
        }
    }
    out
}

/// Renders the table of inputs that must parse, one `input / parsed lines` block per row.
fn good_table(rows: &[Input]) -> String {
    let mut out = String::new();
    for &input in rows {
        match describe(input) {
            Ok(lines) => {
                let _ = writeln!(out, "{}", heading(input));
                for line in lines {
                    let _ = writeln!(out, "  {line}");
                }
                out.push('\n');
            }
            Err(message) => panic!("{input:?} must parse, but was rejected: {message}"),
        }
    }
    out
}

fn snapshot(name: &str, table: String) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, table);
    });
}

const BAD: &[Input] = {
    use Input::{List as L, Service as S, Target as T};
    &[
        // The target itself.
        T(""),
        T("pass:///"),
        T("dns:"),
        T("dns://8.8.8.8"),
        T("etcd://127.0.0.1:2379"),
        T("pass:///a:1%2"),
        T("pass:///a:1%zz2"),
        T("pass:///%FF:1"),
        // pass endpoints, one per bad form.
        T("pass:///a:1,,b:1"),
        T("pass:///a:1,"),
        T("pass:///,a:1"),
        T("pass:///#2"),
        T("pass:///a"),
        T("pass:///a:"),
        T("pass:///a#2"),
        T("pass:///[::1]"),
        T("pass:///a:1#"),
        T("pass:///a:1#0"),
        T("pass:///a:9080,b:9090#0"),
        T("pass:///a:1#abc"),
        T("pass:///a:1#-1"),
        T("pass:///a:1#+1"),
        T("pass:///a:1#1025"),
        T("pass:///a:1#18446744073709551616"),
        T("pass:///a:1%23%30"),
        T("pass:///a:0"),
        T("pass:///a:65536"),
        T("pass:///a:x"),
        T("pass:///[::1:80"),
        T("pass:///[::1]80"),
        T("pass:///::1:80"),
        T("pass:///[::g]:80"),
        T("pass:///[fe80::1%25eth0]:80"),
        T("pass:///256.0.0.1:80"),
        T("pass:///a_b!:80"),
        T("pass:///a..b:80"),
        T("pass:///:9080,localhost:9080"),
        T("pass:///[::1]:80,[0:0::1]:80"),
        T("pass:///%20a:1"),
        T("pass:///a:1%20,b:1"),
        // etcd endpoints.
        T("etcd:///"),
        T("etcd:///#3"),
        T("etcd:///a,b#2"),
        T("etcd:///user%20service"),
        T("etcd:///svc#0"),
        T("etcd:///svc#"),
        T("etcd:///svc#x"),
        // Anchor lists and service names parsed directly.
        L(""),
        L("a:1%23"),
        L("a:1#2#3"),
        L("A:1,a:1"),
        L(" a:1"),
        L("a:1 ,b:1"),
        L("a:1\n"),
        L("[10.0.0.1]:80"),
        L("010.0.0.1:80"),
        L(".a:1"),
        L("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1"),
        S(""),
        S("svc\u{0}"),
        S("svc\t#2"),
    ]
};

const GOOD: &[Input] = {
    use Input::{List as L, Service as S, Target as T};
    &[
        // The original notes' examples.
        T("pass:///:9080#2,:9090#1"),
        T("pass:///10.0.0.1:9080#2,10.0.0.2:9090"),
        T("etcd:///user-service#3"),
        // Targets without a registered scheme go to passthrough whole.
        T("127.0.0.1:50051"),
        T("localhost:50051"),
        T("[::1]:50051"),
        T("unix:///tmp/grpc.sock"),
        T("localhost%3A50051"),
        // Every shape of a registered target.
        T("dns:///example.com:443"),
        T("dns://8.8.8.8/example.com"),
        T("dns:example.com"),
        T("passthrough:///host:1#frag?query"),
        T("passthrough:///a%25b"),
        T("PASS:///Host.Example:1#1024"),
        T("pass:///a:1%232,b:1%23%33"),
        T("pass:///[0:0::1]:80#2,[::ffff:10.0.0.1]:81"),
        T("pass:///svc.cluster.local.:443,svc-2_x:65535#3"),
        T("etcd://127.0.0.1:2379,127.0.0.1:22379/foo/bar/my-service#2"),
        T("etcd:///svc"),
        T("etcd:///svc%232"),
        // Anchor lists and service names parsed directly.
        L(":1"),
        L("a:001#007"),
        L("localhost:9080,127.0.0.1:9080,[::1]:9080"),
        L("a:1%232"),
        S("foo/bar/my-service#2"),
        S("/services/foo/"),
    ]
};

#[test]
fn every_bad_target_anchor_list_and_service_name_has_its_exact_error() {
    assert!(BAD.len() >= 40, "the table must cover at least 40 bad inputs");
    snapshot("bad_targets", bad_table(BAD));
}

#[test]
fn every_good_target_anchor_list_and_service_name_has_its_parsed_form() {
    assert!(GOOD.len() >= 20, "the table must cover at least 20 good inputs");
    snapshot("good_targets", good_table(GOOD));
}
