//! The six vendor formats, as sipdm's templates (config/templates/) render them: an unassigned
//! phone (gcti_provisioning, hotline to the IVR) and an assigned one on a disaster-recovery
//! profile (two registrars, no hotline).

use std::collections::HashMap;

use testbed::phone::chain::{alternates, cisco_rule_url, ChainError, Next, Walk};
use testbed::phone::config_parse::{
    parse, CheckSyncAction, CheckSyncPolicy, ConfigError, PhoneConfig, Redundancy, Registrar,
    Transport,
};
use testbed::phone::{Mac, Vendor};

fn reg(host: &str, port: u16) -> Registrar {
    Registrar {
        host: host.into(),
        port,
        transport: Transport::Udp,
    }
}

const POLYCOM_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!-- sipdm: settings of one phone, rendered from config/templates/polycom/phone.cfg.
     Served as {mac}-phone.cfg, the file its master ({mac}.cfg or 000000000000.cfg) names in
     CONFIG_FILES. Edit the template, not this file. -->



<polycomConfig
  device.set="1"
  device.prov.serverType.set="1"
  device.prov.serverType="HTTP"
  device.prov.serverName.set="1"
  device.prov.serverName="http://127.0.0.1:8080/fs/dm/prov"
  reg.1.address="gcti_provisioning"
  reg.1.label="Provisioning"
  reg.1.displayName="Provisioning"
  reg.1.auth.userId="prov-0004f2000001"
  reg.1.auth.password="k&amp;9&quot;x"
  reg.1.server.1.address="127.0.0.1"
  reg.1.server.1.port="5070"
  reg.1.server.1.transport="UDPOnly"
  reg.1.server.1.register="1"
  reg.1.server.2.address=""
  reg.1.server.2.port=""
  reg.1.server.2.transport=""
  reg.1.server.2.register="0"
  voIpProt.SIP.specialEvent.checkSync.alwaysReboot="0"
  call.autoOffHook.1.enabled="1"
  call.autoOffHook.1.contact="8800"

/>
"#;

#[test]
fn polycom_unassigned() {
    let c = parse(Vendor::Polycom, POLYCOM_DEFAULT).unwrap();
    assert_eq!(c.registrars, vec![reg("127.0.0.1", 5070)]);
    assert_eq!(c.user, "gcti_provisioning");
    assert_eq!(c.display_name, "Provisioning");
    assert_eq!(c.auth_user, "prov-0004f2000001");
    assert_eq!(c.password, "k&9\"x", "XML escapes are resolved");
    assert_eq!(c.hotline.as_deref(), Some("8800"));
}

#[test]
fn polycom_dual_registration() {
    let text = POLYCOM_DEFAULT
        .replace(
            r#"reg.1.address="gcti_provisioning""#,
            r#"reg.1.address="2000""#,
        )
        .replace(
            r#"reg.1.server.2.address="""#,
            r#"reg.1.server.2.address="10.0.2.1""#,
        )
        .replace(r#"reg.1.server.2.port="""#, r#"reg.1.server.2.port="5060""#)
        .replace(
            r#"reg.1.server.2.transport="""#,
            r#"reg.1.server.2.transport="TCPOnly""#,
        )
        .replace(
            r#"reg.1.server.2.register="0""#,
            r#"reg.1.server.2.register="1""#,
        )
        .replace(
            r#"call.autoOffHook.1.enabled="1""#,
            r#"call.autoOffHook.1.enabled="0""#,
        );
    let c = parse(Vendor::Polycom, &text).unwrap();
    assert_eq!(c.user, "2000");
    assert_eq!(c.redundancy, Redundancy::Concurrent);
    assert_eq!(
        c.registrars,
        vec![
            reg("127.0.0.1", 5070),
            Registrar {
                host: "10.0.2.1".into(),
                port: 5060,
                transport: Transport::Tcp
            }
        ]
    );
    assert_eq!(c.hotline, None);
}

const YEALINK_DEFAULT: &str = "#!version:1.0.0.1
## sipdm: configuration of one phone, rendered from config/templates/yealink/phone.cfg.
## Edit the template, not this file.



account.1.enable = 1
account.1.label = Provisioning
account.1.display_name = Provisioning
account.1.user_name = gcti_provisioning
account.1.auth_name = prov-805ec0000002
account.1.password = s3cr=t
account.1.sip_server.1.address = 127.0.0.1
account.1.sip_server.1.port = 5070
account.1.sip_server.1.transport_type = 0
## Second registrar (disaster-recovery profile); emptied otherwise so a phone moved off such a
## profile stops registering to the peer.
account.1.sip_server.2.address = 
account.1.sip_server.2.port = 
account.1.sip_server.2.transport_type = 
## 0 = register to both servers at once (a DR profile registers to preferred AND peer).
account.1.fallback.redundancy_type = 0
## Unassigned phones dial the provisioning IVR as soon as the handset is lifted.
features.hotline_number = 8800
features.hotline_delay = 0
static.auto_provision.server.url = http://127.0.0.1:8080/fs/dm/prov
## check-sync;reboot=false re-fetches without rebooting; only reboot=true reboots.
sip.notify_reboot_enable = 0
";

#[test]
fn yealink_unassigned() {
    let c = parse(Vendor::Yealink, YEALINK_DEFAULT).unwrap();
    assert_eq!(c.registrars, vec![reg("127.0.0.1", 5070)]);
    assert_eq!(c.user, "gcti_provisioning");
    assert_eq!(c.auth_user, "prov-805ec0000002");
    assert_eq!(
        c.password, "s3cr=t",
        "only the first '=' separates key and value"
    );
    assert_eq!(c.hotline.as_deref(), Some("8800"));
}

#[test]
fn yealink_dual_and_successive() {
    let text = YEALINK_DEFAULT
        .replace(
            "account.1.sip_server.2.address = ",
            "account.1.sip_server.2.address = sips2",
        )
        .replace(
            "account.1.sip_server.2.port = ",
            "account.1.sip_server.2.port = 5060",
        )
        .replace(
            "account.1.sip_server.2.transport_type = ",
            "account.1.sip_server.2.transport_type = 2",
        )
        .replace(
            "features.hotline_number = 8800",
            "features.hotline_number = ",
        )
        // assigned: an unassigned line without a hotline is an error (below)
        .replace(
            "account.1.user_name = gcti_provisioning",
            "account.1.user_name = 2000",
        );
    let c = parse(Vendor::Yealink, &text).unwrap();
    assert_eq!(
        c.registrars[1],
        Registrar {
            host: "sips2".into(),
            port: 5060,
            transport: Transport::Tls
        }
    );
    assert_eq!(c.redundancy, Redundancy::Concurrent);
    assert_eq!(c.hotline, None);
    let c = parse(
        Vendor::Yealink,
        &text.replace("redundancy_type = 0", "redundancy_type = 1"),
    )
    .unwrap();
    assert_eq!(c.redundancy, Redundancy::Failover);
}

const CISCO_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- sipdm: configuration of one phone, rendered from config/templates/cisco/phone.xml.
     Served as spa{mac}.cfg and spa{mac}.xml. Edit the template, not this file. -->



<flat-profile>
  <Provision_Enable ua="na">Yes</Provision_Enable>
  <Resync_On_Reset ua="na">Yes</Resync_On_Reset>
  <Resync_From_SIP ua="na">Yes</Resync_From_SIP>
  <Profile_Rule ua="na">http://127.0.0.1:8080/fs/dm/prov/spa$MA.xml</Profile_Rule>
  <Line_Enable_1_ ua="na">Yes</Line_Enable_1_>
  <Proxy_1_ ua="na">127.0.0.1:5070</Proxy_1_>
  <SIP_Transport_1_ ua="na">UDP</SIP_Transport_1_>
  <Register_1_ ua="na">Yes</Register_1_>
  <Register_Expires_1_ ua="na">3600</Register_Expires_1_>
  <!-- Second registrar of a disaster-recovery profile. Alternate_Proxy / Dual_Registration are
       not confirmed for every SPA firmware (shared/VENDORS.md); emptied when there is no peer. -->
  <Alternate_Proxy_1_ ua="na"></Alternate_Proxy_1_>
  <Dual_Registration_1_ ua="na">No</Dual_Registration_1_>
  <User_ID_1_ ua="na">gcti_provisioning</User_ID_1_>
  <Display_Name_1_ ua="na">Provisioning</Display_Name_1_>
  <Use_Auth_ID_1_ ua="na">Yes</Use_Auth_ID_1_>
  <Auth_ID_1_ ua="na">prov-000e08000003</Auth_ID_1_>
  <Password_1_ ua="na">pw&lt;3</Password_1_>
  <!-- A hotline is a dial plan that dials the IVR at once (S0) when the handset is lifted. -->

  <Dial_Plan_1_ ua="na">( S0 &lt;:8800&gt; )</Dial_Plan_1_>

  <!-- Challenge check-sync NOTIFYs; sipdm answers with the line's credentials. -->
  <Auth_Resync-Reboot_1_ ua="na">Yes</Auth_Resync-Reboot_1_>
</flat-profile>
"#;

#[test]
fn cisco_unassigned() {
    let c = parse(Vendor::Cisco, CISCO_DEFAULT).unwrap();
    assert_eq!(c.registrars, vec![reg("127.0.0.1", 5070)]);
    assert_eq!(c.user, "gcti_provisioning");
    assert_eq!(c.auth_user, "prov-000e08000003");
    assert_eq!(c.password, "pw<3");
    assert_eq!(c.hotline.as_deref(), Some("8800"));
}

#[test]
fn cisco_dual_registration_and_plain_dial_plan() {
    let text = CISCO_DEFAULT
        .replace(
            r#"<Alternate_Proxy_1_ ua="na"></Alternate_Proxy_1_>"#,
            r#"<Alternate_Proxy_1_ ua="na">sips2:5062</Alternate_Proxy_1_>"#,
        )
        .replace(">No</Dual_Registration_1_>", ">Yes</Dual_Registration_1_>")
        .replace("( S0 &lt;:8800&gt; )", "(*xx|xx.)")
        .replace(">gcti_provisioning<", ">1001<");
    let c = parse(Vendor::Cisco, &text).unwrap();
    assert_eq!(
        c.registrars,
        vec![reg("127.0.0.1", 5070), reg("sips2", 5062)]
    );
    assert_eq!(c.user, "1001");
    assert_eq!(c.hotline, None);
}

#[test]
fn cisco_srv_emulation_and_no_auth_id() {
    let text = CISCO_DEFAULT
        .replace(
            ">127.0.0.1:5070<",
            ">sip.example:SRV=10.0.0.1:5060:p=0|10.0.0.2:5061:p=1<",
        )
        .replace(">Yes</Use_Auth_ID_1_>", ">No</Use_Auth_ID_1_>");
    let c = parse(Vendor::Cisco, &text).unwrap();
    assert_eq!(
        c.registrars,
        vec![reg("10.0.0.1", 5060), reg("10.0.0.2", 5061)]
    );
    assert_eq!(
        c.auth_user, "gcti_provisioning",
        "without Use_Auth_ID the user id authenticates"
    );
}

const GRANDSTREAM_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- sipdm: configuration of one phone, rendered from config/templates/grandstream/phone.xml.
     Served as cfg{mac}.xml. Edit the template, not this file. -->




<gs_provision version="1">
  <mac>000b82000004</mac>
  <config version="1">
    <!-- account 1: on, server, transport, register -->
    <P271>1</P271>
    <P47>127.0.0.1:5070</P47>
    <P130>0</P130>
    <P31>1</P31>
    <!-- user (DN), auth ID, password, display name -->
    <P35>gcti_provisioning</P35>
    <P36>prov-000b82000004</P36>
    <P34>pw</P34>
    <P3>Provisioning</P3>
    <!-- secondary SIP server (disaster-recovery peer), emptied when there is none -->
    <P2312></P2312>
    <!-- auto-dial (hotline) to the provisioning IVR for unassigned phones -->
    <P71>8800</P71>
    <P8388>0</P8388>
    <!-- provisioning: 1 HTTP, 2 HTTPS; path without the scheme -->
    <P212>1</P212>
    <P237>127.0.0.1:8080/fs/dm/prov</P237>
    <!-- 0: challenge check-sync NOTIFYs; sipdm answers with the line's credentials -->
    <P4428>0</P4428>
  </config>
</gs_provision>
"#;

#[test]
fn grandstream_unassigned_and_dual() {
    let c = parse(Vendor::Grandstream, GRANDSTREAM_DEFAULT).unwrap();
    assert_eq!(c.registrars, vec![reg("127.0.0.1", 5070)]);
    assert_eq!(c.user, "gcti_provisioning");
    assert_eq!(c.auth_user, "prov-000b82000004");
    assert_eq!(c.display_name, "Provisioning");
    assert_eq!(c.hotline.as_deref(), Some("8800"));
    let dual = GRANDSTREAM_DEFAULT.replace("<P2312></P2312>", "<P2312>sips2:5060</P2312>");
    let c = parse(Vendor::Grandstream, &dual).unwrap();
    assert_eq!(
        c.registrars,
        vec![reg("127.0.0.1", 5070), reg("sips2", 5060)]
    );
}

const SNOM_DEFAULT: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- sipdm: configuration of one phone, rendered from config/templates/snom/phone.xml.
     Served as {mac}.xml (and, through phone.htm, as {model}-{mac}.htm).
     Edit the template, not this file. -->


<settings>
  <phone-settings>
    <setting_server>http://127.0.0.1:8080/fs/dm/prov/000413000005.xml</setting_server>
    <settings_refresh_timer>86400</settings_refresh_timer>
    <!-- challenge check-sync NOTIFYs; sipdm answers with the line's credentials -->
    <challenge_checksync>on</challenge_checksync>
    <user_active idx="1">on</user_active>
    <user_name idx="1">gcti_provisioning</user_name>
    <user_realname idx="1">Provisioning</user_realname>
    <user_pname idx="1">prov-000413000005</user_pname>
    <user_pass idx="1">pw</user_pass>
    <user_host idx="1">127.0.0.1:5070</user_host>
    <user_outbound idx="1">127.0.0.1:5070;transport=udp</user_outbound>
    <!-- Disaster recovery: the same line as a second identity on the peer server, linked as the
         failover identity, so that the phone registers to both. -->

    <user_active idx="2">off</user_active>
    <user_failover_identity idx="1">none</user_failover_identity>

    <!-- hot line to the provisioning IVR for unassigned phones -->
    <auto_dial>1</auto_dial>
    <auto_dial_target>8800</auto_dial_target>

  </phone-settings>
</settings>
"#;

#[test]
fn snom_unassigned() {
    let c = parse(Vendor::Snom, SNOM_DEFAULT).unwrap();
    assert_eq!(c.registrars, vec![reg("127.0.0.1", 5070)]);
    assert_eq!(c.user, "gcti_provisioning");
    assert_eq!(c.auth_user, "prov-000413000005");
    assert_eq!(c.hotline.as_deref(), Some("8800"));
}

#[test]
fn snom_failover_identity_registers_to_both() {
    let text = SNOM_DEFAULT
        .replace(
            r#"<user_active idx="2">off</user_active>
    <user_failover_identity idx="1">none</user_failover_identity>"#,
            r#"<user_active idx="2">on</user_active>
    <user_name idx="2">2000</user_name>
    <user_host idx="2">sips2:5060</user_host>
    <user_outbound idx="2">sips2:5060;transport=tcp</user_outbound>
    <user_failover_identity idx="1">2</user_failover_identity>"#,
        )
        .replace("<auto_dial>1</auto_dial>", "<auto_dial>off</auto_dial>")
        // assigned: an unassigned line without a hotline is an error (below)
        .replace(
            r#"<user_name idx="1">gcti_provisioning</user_name>"#,
            r#"<user_name idx="1">2000</user_name>"#,
        );
    let c = parse(Vendor::Snom, &text).unwrap();
    assert_eq!(
        c.registrars,
        vec![
            reg("127.0.0.1", 5070),
            Registrar {
                host: "sips2".into(),
                port: 5060,
                transport: Transport::Tcp
            }
        ]
    );
    assert_eq!(c.hotline, None);
}

const AUDIOCODES_DEFAULT: &str = "# sipdm: configuration of one phone, rendered from config/templates/audiocodes/phone.cfg.
# Edit the template, not this file.



voip/line/0/enabled=1
voip/line/0/id=gcti_provisioning
voip/line/0/description=Provisioning
voip/line/0/auth_name=prov-00908f000006
voip/line/0/auth_password=pw
voip/signalling/sip/use_proxy=1
voip/signalling/sip/proxy_address=127.0.0.1
voip/signalling/sip/sip_registrar/enabled=1
voip/signalling/sip/sip_registrar/addr=127.0.0.1
voip/signalling/sip/sip_registrar/port=5070
voip/signalling/sip/transport_protocol=UDP
# Disaster-recovery peer: this family fails over to a redundant proxy rather than registering to
# both; the key names are not confirmed (shared/VENDORS.md) and are ignored by firmware without them.
voip/signalling/sip/redundant_proxy/enabled=0
voip/signalling/sip/redundant_proxy/address=
voip/signalling/sip/redundant_proxy/port=
# Hotline to the provisioning IVR for unassigned phones (key names not confirmed).
voip/line/0/auto_dial/enabled=1
voip/line/0/auto_dial/dest=8800
provisioning/configuration/url=http://127.0.0.1:8080/fs/dm/prov/
";

#[test]
fn audiocodes_unassigned_and_redundant_proxy() {
    let c = parse(Vendor::AudioCodes, AUDIOCODES_DEFAULT).unwrap();
    assert_eq!(c.registrars, vec![reg("127.0.0.1", 5070)]);
    assert_eq!(c.user, "gcti_provisioning");
    assert_eq!(c.auth_user, "prov-00908f000006");
    assert_eq!(c.hotline.as_deref(), Some("8800"));
    assert_eq!(c.redundancy, Redundancy::Failover);
    let dr = AUDIOCODES_DEFAULT
        .replace("redundant_proxy/enabled=0", "redundant_proxy/enabled=1")
        .replace("redundant_proxy/address=", "redundant_proxy/address=sips2")
        .replace("redundant_proxy/port=", "redundant_proxy/port=5060");
    let c = parse(Vendor::AudioCodes, &dr).unwrap();
    assert_eq!(
        c.registrars,
        vec![reg("127.0.0.1", 5070), reg("sips2", 5060)]
    );
}

#[test]
fn files_that_say_nothing_are_errors_not_panics() {
    assert!(matches!(
        parse(Vendor::Yealink, "#!version:1.0.0.1\n"),
        Err(ConfigError::NoRegistrar(_))
    ));
    assert!(matches!(
        parse(
            Vendor::Cisco,
            "<flat-profile><Proxy_1_>h</Proxy_1_></flat-profile>"
        ),
        Err(ConfigError::NoUser(_))
    ));
    assert!(matches!(
        parse(Vendor::Grandstream, SNOM_DEFAULT),
        Err(ConfigError::WrongRoot { .. })
    ));
    assert!(matches!(
        parse(Vendor::Snom, "<settings><phone-settings>"),
        Err(ConfigError::NoRegistrar(_))
    ));
    assert!(parse(Vendor::Polycom, "<polycomConfig reg.1.address=\"x\" reg.1.server.1.address=\"h\" reg.1.server.1.port=\"70000\"/>").is_err());
    assert!(parse(Vendor::Cisco, "<<<").is_err());
    for v in Vendor::ALL {
        let _ = parse(v, "\u{0}\u{ffff}<a b='");
    }
}

// ---- the chain of files, as each firmware walks it ------------------------------------------

const DIR: &str = "http://127.0.0.1:8080/fs/dm/prov";

/// Walks `walk` against canned files (URL → body; absent = 404). Returns the outcome and every
/// URL asked for.
fn run(
    mut walk: Walk,
    files: &HashMap<String, String>,
) -> (Result<PhoneConfig, ChainError>, Vec<String>) {
    let mut next = walk.next_step();
    let mut asked = Vec::new();
    for _ in 0..10 {
        match next {
            Next::Done(cfg) => return (Ok(cfg), asked),
            Next::Fetch { url, .. } => {
                asked.push(url.clone());
                match walk.fetched(&url, files.get(&url).map(String::as_str)) {
                    Ok(n) => next = n,
                    Err(e) => return (Err(e), asked),
                }
            }
        }
    }
    panic!("the walk never ends: {asked:?}");
}

fn files(list: &[(&str, &str)]) -> HashMap<String, String> {
    list.iter()
        .map(|(name, body)| (format!("{DIR}/{name}"), body.to_string()))
        .collect()
}

fn urls(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{DIR}/{n}")).collect()
}

const POLYCOM_MAC_MASTER: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<APPLICATION APP_FILE_PATH="sip.ld" CONFIG_FILES="0004f2000001-phone.cfg" MISC_FILES=""/>"#;
const POLYCOM_COMMON_MASTER: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<APPLICATION APP_FILE_PATH="sip.ld" CONFIG_FILES="site.cfg, [PHONE_MAC_ADDRESS]-phone.cfg"/>"#;

#[test]
fn polycom_master_then_the_files_it_names() {
    let mac: Mac = "0004f2000001".parse().unwrap();
    let f = files(&[
        ("0004f2000001.cfg", POLYCOM_MAC_MASTER),
        ("0004f2000001-phone.cfg", POLYCOM_DEFAULT),
    ]);
    let (cfg, asked) = run(Walk::boot(Vendor::Polycom, mac, DIR), &f);
    let cfg = cfg.unwrap();
    assert_eq!(asked, urls(&["0004f2000001.cfg", "0004f2000001-phone.cfg"]));
    assert_eq!(cfg.user, "gcti_provisioning");
    assert_eq!(cfg.prov_url, DIR);
    assert_eq!(cfg.check_sync, CheckSyncPolicy::RebootIfChanged);

    // No {mac}.cfg: the common master, [PHONE_MAC_ADDRESS] filled in; the first file listed
    // wins over a later one.
    let site = r#"<polycomConfig reg.1.server.1.address="site-wins" voIpProt.SIP.specialEvent.checkSync.alwaysReboot="1"/>"#;
    let f = files(&[
        ("000000000000.cfg", POLYCOM_COMMON_MASTER),
        ("site.cfg", site),
        ("0004f2000001-phone.cfg", POLYCOM_DEFAULT),
    ]);
    let (cfg, asked) = run(Walk::boot(Vendor::Polycom, mac, &format!("{DIR}/")), &f);
    let cfg = cfg.unwrap();
    assert_eq!(
        asked,
        urls(&[
            "0004f2000001.cfg",
            "000000000000.cfg",
            "site.cfg",
            "0004f2000001-phone.cfg"
        ])
    );
    assert_eq!(cfg.registrars[0].host, "site-wins");
    assert_eq!(cfg.registrars[0].port, 5070);
    assert_eq!(cfg.check_sync, CheckSyncPolicy::AlwaysReboot);

    // {mac}.cfg served as settings (what sipdm did before): not a master, the phone stops.
    let f = files(&[("0004f2000001.cfg", POLYCOM_DEFAULT)]);
    let (cfg, _) = run(Walk::boot(Vendor::Polycom, mac, DIR), &f);
    let e = cfg.unwrap_err().to_string();
    assert!(e.contains("APPLICATION"), "{e}");

    // A file the master names is missing: an error naming it.
    let f = files(&[("0004f2000001.cfg", POLYCOM_MAC_MASTER)]);
    let (cfg, _) = run(Walk::boot(Vendor::Polycom, mac, DIR), &f);
    assert!(
        matches!(cfg, Err(ChainError::NotFound(ref u)) if u.ends_with("0004f2000001-phone.cfg")),
        "{cfg:?}"
    );
}

#[test]
fn polycom_without_its_provisioning_server_is_an_error() {
    for (drop, with) in [
        (
            r#"device.prov.serverName="http://127.0.0.1:8080/fs/dm/prov""#,
            "",
        ),
        (
            r#"device.prov.serverName.set="1""#,
            r#"device.prov.serverName.set="0""#,
        ),
        (r#"device.set="1""#, ""),
    ] {
        let text = POLYCOM_DEFAULT.replace(drop, with);
        let e = parse(Vendor::Polycom, &text).unwrap_err();
        assert!(
            matches!(e, ConfigError::MissingKey { key, .. } if key.starts_with("device.prov.serverName")),
            "{drop}: {e}"
        );
    }
    // serverName without a scheme: serverType says how to reach it.
    let text = POLYCOM_DEFAULT
        .replace("http://127.0.0.1:8080/fs/dm/prov", "fs1:8080/fs/dm/prov")
        .replace(r#"serverType="HTTP""#, r#"serverType="HTTPS""#);
    assert_eq!(
        parse(Vendor::Polycom, &text).unwrap().prov_url,
        "https://fs1:8080/fs/dm/prov"
    );
}

#[test]
fn yealink_common_file_then_its_own() {
    let mac: Mac = "805ec0000002".parse().unwrap();
    let common = "#!version:1.0.0.1\nstatic.auto_provision.server.url = http://fs2:8080/fs/dm/prov\nsip.notify_reboot_enable = 0\naccount.1.sip_server.1.address = from-common\n";
    let f = files(&[
        ("y000000000066.cfg", common),
        ("805ec0000002.cfg", YEALINK_DEFAULT),
    ]);
    let (cfg, asked) = run(Walk::boot(Vendor::Yealink, mac, DIR), &f);
    let cfg = cfg.unwrap();
    assert_eq!(asked, urls(&["y000000000066.cfg", "805ec0000002.cfg"]));
    // the phone's own file wins
    assert_eq!(cfg.registrars[0].host, "127.0.0.1");
    assert_eq!(cfg.prov_url, DIR);
    assert_eq!(cfg.check_sync, CheckSyncPolicy::ByEvent);

    // No common file (404): the phone carries on with its own.
    let f = files(&[("805ec0000002.cfg", YEALINK_DEFAULT)]);
    let (cfg, asked) = run(Walk::boot(Vendor::Yealink, mac, DIR), &f);
    assert_eq!(cfg.unwrap().user, "gcti_provisioning");
    assert_eq!(asked.len(), 2);

    // The URL may come from the common file alone.
    let own = YEALINK_DEFAULT.replace(
        "static.auto_provision.server.url = http://127.0.0.1:8080/fs/dm/prov\n",
        "",
    );
    let f = files(&[("y000000000066.cfg", common), ("805ec0000002.cfg", &own)]);
    assert_eq!(
        run(Walk::boot(Vendor::Yealink, mac, DIR), &f)
            .0
            .unwrap()
            .prov_url,
        "http://fs2:8080/fs/dm/prov"
    );
    // … but from neither is an error naming the key.
    let f = files(&[("805ec0000002.cfg", &own)]);
    let e = run(Walk::boot(Vendor::Yealink, mac, DIR), &f)
        .0
        .unwrap_err();
    assert!(
        e.to_string().contains("static.auto_provision.server.url"),
        "{e}"
    );

    // Re-fetch: from the file's directory, not from DHCP.
    let f: HashMap<String, String> = [
        (
            "http://fs2:8080/fs/dm/prov/y000000000066.cfg".to_string(),
            common.to_string(),
        ),
        (
            "http://fs2:8080/fs/dm/prov/805ec0000002.cfg".to_string(),
            own.clone(),
        ),
    ]
    .into();
    let (cfg, asked) = run(
        Walk::refetch(Vendor::Yealink, mac, "http://fs2:8080/fs/dm/prov"),
        &f,
    );
    assert!(cfg.is_ok());
    assert!(
        asked.iter().all(|u| u.starts_with("http://fs2:8080/")),
        "{asked:?}"
    );
}

#[test]
fn yealink_check_sync_follows_notify_reboot_enable() {
    let with = |v: &str| {
        parse(
            Vendor::Yealink,
            &YEALINK_DEFAULT.replace(
                "sip.notify_reboot_enable = 0",
                &format!("sip.notify_reboot_enable = {v}"),
            ),
        )
        .unwrap()
        .check_sync
    };
    assert_eq!(with("0"), CheckSyncPolicy::ByEvent);
    assert_eq!(with("1"), CheckSyncPolicy::AlwaysReboot);
    assert_eq!(with("2"), CheckSyncPolicy::Ignore);
    let default = YEALINK_DEFAULT.replace("sip.notify_reboot_enable = 0\n", "");
    assert_eq!(
        parse(Vendor::Yealink, &default).unwrap().check_sync,
        CheckSyncPolicy::AlwaysReboot,
        "Yealink reboots on check-sync unless told otherwise"
    );
    let by_event = CheckSyncPolicy::ByEvent;
    assert_eq!(
        by_event.action("check-sync;reboot=false", true),
        CheckSyncAction::Refetch
    );
    assert_eq!(
        by_event.action("check-sync;reboot=true", true),
        CheckSyncAction::Reboot
    );
    assert_eq!(by_event.action("resync", true), CheckSyncAction::Refetch);
    assert_eq!(by_event.action("reboot_now", true), CheckSyncAction::Reboot);
    let polycom = CheckSyncPolicy::RebootIfChanged;
    assert_eq!(
        polycom.action("check-sync", false),
        CheckSyncAction::Refetch
    );
    assert_eq!(polycom.action("check-sync", true), CheckSyncAction::Reboot);
    assert_eq!(
        CheckSyncPolicy::Ignore.action("check-sync", true),
        CheckSyncAction::Ignore
    );
}

#[test]
fn cisco_factory_profile_then_profile_rule() {
    let mac: Mac = "000e08000003".parse().unwrap();
    let factory = format!(
        r#"<flat-profile><Provision_Enable ua="na">Yes</Provision_Enable><Resync_From_SIP ua="na">Yes</Resync_From_SIP><Profile_Rule ua="na">{DIR}/spa$MA.xml</Profile_Rule></flat-profile>"#
    );
    let f = files(&[
        ("spa504G.cfg", &factory),
        ("spa000e08000003.xml", CISCO_DEFAULT),
    ]);
    let (cfg, asked) = run(Walk::boot(Vendor::Cisco, mac, DIR), &f);
    let cfg = cfg.unwrap();
    assert_eq!(asked, urls(&["spa504G.cfg", "spa000e08000003.xml"]));
    assert_eq!(cfg.user, "gcti_provisioning");
    assert_eq!(cfg.prov_url, format!("{DIR}/spa$MA.xml"));
    assert_eq!(cfg.check_sync, CheckSyncPolicy::ByEvent);

    // Re-fetch: the per-MAC file the rule names, and nothing else.
    let (cfg, asked) = run(Walk::refetch(Vendor::Cisco, mac, &cfg.prov_url), &f);
    assert!(cfg.is_ok());
    assert_eq!(asked, urls(&["spa000e08000003.xml"]));

    // The factory file without a Profile_Rule: the phone has nowhere to go.
    let f = files(&[(
        "spa504G.cfg",
        "<flat-profile><Provision_Enable>Yes</Provision_Enable></flat-profile>",
    )]);
    let e = run(Walk::boot(Vendor::Cisco, mac, DIR), &f).0.unwrap_err();
    assert!(e.to_string().contains("Profile_Rule"), "{e}");

    // A per-MAC file without Profile_Rule is an error naming it; Resync_From_SIP = No ignores
    // check-sync.
    let no_rule = CISCO_DEFAULT.replace(
        r#"<Profile_Rule ua="na">http://127.0.0.1:8080/fs/dm/prov/spa$MA.xml</Profile_Rule>"#,
        "",
    );
    let e = parse(Vendor::Cisco, &no_rule).unwrap_err();
    assert!(e.to_string().contains("Profile_Rule"), "{e}");
    let deaf = CISCO_DEFAULT.replace(
        r#"<Resync_From_SIP ua="na">Yes</Resync_From_SIP>"#,
        r#"<Resync_From_SIP ua="na">No</Resync_From_SIP>"#,
    );
    assert_eq!(
        parse(Vendor::Cisco, &deaf).unwrap().check_sync,
        CheckSyncPolicy::Ignore
    );

    // Rules: options prefix, $MA / $PSN, a path relative to the server it came from.
    assert_eq!(
        cisco_rule_url("[--key abc] http://h/p/spa$MA.xml", &mac, "504G", None),
        "http://h/p/spa000e08000003.xml"
    );
    assert_eq!(
        cisco_rule_url("/spa$PSN.cfg", &mac, "504G", Some("http://h:81/a/b.cfg")),
        "http://h:81/spa504G.cfg"
    );
    // A rule that sends the phone round in circles is an error, not a hang.
    let a =
        format!(r#"<flat-profile><Profile_Rule>{DIR}/spa$MA.xml</Profile_Rule></flat-profile>"#);
    let b =
        format!(r#"<flat-profile><Profile_Rule>{DIR}/spa504G.cfg</Profile_Rule></flat-profile>"#);
    let f = files(&[("spa504G.cfg", &a), ("spa000e08000003.xml", &b)]);
    assert!(matches!(
        run(Walk::boot(Vendor::Cisco, mac, DIR), &f).0,
        Err(ChainError::Loop(_))
    ));
}

#[test]
fn grandstream_snom_audiocodes_refetch_where_their_file_says() {
    let gs: Mac = "000b82000004".parse().unwrap();
    let c = parse(Vendor::Grandstream, GRANDSTREAM_DEFAULT).unwrap();
    assert_eq!(c.prov_url, DIR, "P212 1 = HTTP, P237 without scheme");
    let https = GRANDSTREAM_DEFAULT.replace("<P212>1</P212>", "<P212>2</P212>");
    assert_eq!(
        parse(Vendor::Grandstream, &https).unwrap().prov_url,
        "https://127.0.0.1:8080/fs/dm/prov"
    );
    let mut w = Walk::refetch(Vendor::Grandstream, gs, &c.prov_url);
    assert_eq!(
        w.next_step(),
        Next::Fetch {
            url: format!("{DIR}/cfg000b82000004.xml"),
            optional: false
        }
    );
    let no_path =
        GRANDSTREAM_DEFAULT.replace("<P237>127.0.0.1:8080/fs/dm/prov</P237>", "<P237></P237>");
    let e = parse(Vendor::Grandstream, &no_path).unwrap_err();
    assert!(e.to_string().contains("P237"), "{e}");

    let snom: Mac = "000413000005".parse().unwrap();
    let c = parse(Vendor::Snom, SNOM_DEFAULT).unwrap();
    assert_eq!(c.prov_url, format!("{DIR}/000413000005.xml"));
    let mut w = Walk::refetch(Vendor::Snom, snom, &c.prov_url);
    assert_eq!(
        w.next_step(),
        Next::Fetch {
            url: format!("{DIR}/000413000005.xml"),
            optional: false
        }
    );
    let no_server = SNOM_DEFAULT.replace(
        "<setting_server>http://127.0.0.1:8080/fs/dm/prov/000413000005.xml</setting_server>",
        "",
    );
    let e = parse(Vendor::Snom, &no_server).unwrap_err();
    assert!(e.to_string().contains("setting_server"), "{e}");

    let ac: Mac = "00908f000006".parse().unwrap();
    let c = parse(Vendor::AudioCodes, AUDIOCODES_DEFAULT).unwrap();
    assert_eq!(c.check_sync, CheckSyncPolicy::RebootIfChanged);
    let mut w = Walk::refetch(Vendor::AudioCodes, ac, &c.prov_url);
    assert_eq!(
        w.next_step(),
        Next::Fetch {
            url: format!("{DIR}/00908f000006.cfg"),
            optional: false
        }
    );
    let no_url = AUDIOCODES_DEFAULT.replace(
        "provisioning/configuration/url=http://127.0.0.1:8080/fs/dm/prov/\n",
        "",
    );
    let e = parse(Vendor::AudioCodes, &no_url).unwrap_err();
    assert!(
        e.to_string().contains("provisioning/configuration/url"),
        "{e}"
    );
}

/// An unassigned line that cannot reach the IVR is useless: an error naming the hotline key.
#[test]
fn unassigned_line_without_hotline_is_an_error() {
    let cases = [
        (
            Vendor::Polycom,
            POLYCOM_DEFAULT.replace(
                r#"call.autoOffHook.1.enabled="1""#,
                r#"call.autoOffHook.1.enabled="0""#,
            ),
            "call.autoOffHook",
        ),
        (
            Vendor::Yealink,
            YEALINK_DEFAULT.replace(
                "features.hotline_number = 8800",
                "features.hotline_number = ",
            ),
            "features.hotline_number",
        ),
        (
            Vendor::Cisco,
            CISCO_DEFAULT.replace("( S0 &lt;:8800&gt; )", "(*xx|xx.)"),
            "Dial_Plan_1_",
        ),
        (
            Vendor::Grandstream,
            GRANDSTREAM_DEFAULT.replace("<P71>8800</P71>", "<P71></P71>"),
            "P71",
        ),
        (
            Vendor::Snom,
            SNOM_DEFAULT.replace("<auto_dial>1</auto_dial>", "<auto_dial>off</auto_dial>"),
            "auto_dial",
        ),
        (
            Vendor::AudioCodes,
            AUDIOCODES_DEFAULT.replace("auto_dial/enabled=1", "auto_dial/enabled=0"),
            "auto_dial",
        ),
    ];
    for (vendor, text, key) in cases {
        let e = parse(vendor, &text).unwrap_err();
        assert!(
            matches!(e, ConfigError::MissingKey { .. }) && e.to_string().contains(key),
            "{vendor}: {e}"
        );
    }
}

/// The file's server is one of the DHCP URLs' (several addresses behind one name): the other
/// addresses serve the same path. Another server has no alternates.
#[test]
fn alternates_are_the_other_addresses_of_the_same_server() {
    let known = [
        "http://127.0.0.1:8001/fs/dm/prov",
        "http://127.0.0.2:8002/fs/dm/prov",
    ];
    assert_eq!(
        alternates("http://127.0.0.2:8002/fs/dm/prov/spa$MA.xml", &known),
        ["http://127.0.0.1:8001/fs/dm/prov/spa$MA.xml"]
    );
    assert!(alternates("http://fs2:8080/fs/dm/prov", &known).is_empty());
}
