//! The six vendor formats, as sipdm's templates (config/templates/) render them: an unassigned
//! phone (gcti_provisioning, hotline to the IVR) and an assigned one on a disaster-recovery
//! profile (two registrars, no hotline).

use testbed::phone::config_parse::{parse, ConfigError, Redundancy, Registrar, Transport};
use testbed::phone::Vendor;

fn reg(host: &str, port: u16) -> Registrar {
    Registrar {
        host: host.into(),
        port,
        transport: Transport::Udp,
    }
}

const POLYCOM_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!-- sipdm: configuration of one phone, rendered from config/templates/polycom/phone.cfg.
     Served as {mac}.cfg and {mac}-phone.cfg. Edit the template, not this file. -->



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
        .replace("<auto_dial>1</auto_dial>", "<auto_dial>off</auto_dial>");
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
