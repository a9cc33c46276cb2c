use super::*;

#[test]
fn chain_names_are_checked() {
    let isolation = || Isolation::new(CommandPrefix::host());
    assert_eq!(isolation().chain(), CHAIN);
    let own = isolation().with_chain("MFISO-t1234567").unwrap();
    assert_eq!(own.chain(), "MFISO-t1234567");
    let long = "X".repeat(29);
    for bad in ["", "DOCKER-USER", "FORWARD", "a b", "a;b", long.as_str()] {
        assert!(isolation().with_chain(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn command_prefixes() {
    let ns = CommandPrefix::nsenter_net("/var/run/netns/t1");
    assert_eq!(
        ns.command_line("iptables", &["-w", "-S", CHAIN]),
        "nsenter --net=/var/run/netns/t1 iptables -w -S MEDFORGE-ISOLATION"
    );
    assert_eq!(
        CommandPrefix::host().command_line("sysctl", &["-n", BRIDGE_NF_SYSCTL]),
        "sysctl -n net.bridge.bridge-nf-call-iptables"
    );
    assert_eq!(
        CommandPrefix::new(["ip", "netns", "exec", "x"]).command_line("iptables", &[]),
        "ip netns exec x iptables"
    );
}
