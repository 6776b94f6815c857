//! The deletion certificate: which service deleted what and when, what was kept on purpose and
//! why, sealed with the SHA-256 of its canonical JSON; rendered as JSON, Markdown or HTML.

use chrono::{DateTime, Utc};
use picket_platform::text::html_escape;
use picket_platform::time::{from_timestamp, to_timestamp};
use picket_proto::offboarding::v1 as offboarding;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::saga::Saga;

/// What stays after a tenant's purge, on purpose.
fn retained() -> Vec<offboarding::RetainedData> {
    vec![
        offboarding::RetainedData {
            service: "ledger".into(),
            description: "The partner's incident-response credit ledger: transfers, packs and \
                          engagements (an engagement may name the tenant)"
                .into(),
            reason: "financial records of the partner, kept as accounting requires".into(),
        },
        offboarding::RetainedData {
            service: "offboarding".into(),
            description: "This offboarding's record and this certificate".into(),
            reason: "proof of deletion".into(),
        },
    ]
}

/// The canonical JSON of `certificate` without its seal, and the seal.
fn sealed(mut certificate: offboarding::DeletionCertificate) -> (serde_json::Value, String) {
    certificate.sha256 = String::new();
    let body = serde_json::to_value(&certificate).unwrap_or_default();
    // serde_json's maps are ordered by key: the same certificate always gives the same bytes.
    let canonical = serde_json::to_vec(&body).unwrap_or_default();
    let seal = Sha256::digest(&canonical)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    (body, seal)
}

/// Issues the certificate of a completed saga: its canonical JSON body and its seal.
pub fn issue(
    saga: &Saga,
    certificate_id: Uuid,
    now: DateTime<Utc>,
) -> (offboarding::DeletionCertificate, serde_json::Value) {
    let row = &saga.row;
    let services: Vec<offboarding::ServiceDeletion> = saga
        .progress
        .iter()
        .filter(|step| step.step == "purge")
        .map(|step| offboarding::ServiceDeletion {
            service: step.service.clone(),
            tables: step
                .tables
                .iter()
                .map(|table| offboarding::PurgedTable {
                    table: table.table.clone(),
                    row_count: table.row_count,
                })
                .collect(),
            total_rows: step.tables.iter().map(|table| table.row_count).sum(),
            confirmed_at: step.confirmed_at.map(to_timestamp),
            purge_completed_event_id: step.confirmation_event_id.clone(),
        })
        .collect();
    let mut certificate = offboarding::DeletionCertificate {
        certificate_id: certificate_id.to_string(),
        offboarding_id: row.offboarding_id.to_string(),
        partner_id: row.partner_id.clone(),
        tenant_id: row.tenant_id.clone(),
        tenant_display_name: row.tenant_display_name.clone(),
        microsoft_tenant_id: row.microsoft_tenant_id.clone(),
        requested_at: Some(to_timestamp(row.requested_at)),
        purge_due_at: Some(to_timestamp(row.purge_due_at)),
        purge_started_at: row.purge_started_at.map(to_timestamp),
        completed_at: row.completed_at.map(to_timestamp),
        total_rows: services.iter().map(|service| service.total_rows).sum(),
        services,
        retained: retained(),
        issued_at: Some(to_timestamp(now)),
        sha256: String::new(),
        reason: row.reason.clone(),
    };
    let (body, seal) = sealed(certificate.clone());
    certificate.sha256 = seal;
    (certificate, body)
}

/// Reads a stored certificate back, checking its seal.
pub fn open(body: &serde_json::Value, seal: &str) -> Option<offboarding::DeletionCertificate> {
    let mut certificate: offboarding::DeletionCertificate =
        serde_json::from_value(body.clone()).ok()?;
    let (_, computed) = sealed(certificate.clone());
    if computed != seal {
        tracing::error!(certificate_id = %certificate.certificate_id, "a certificate's seal does not match");
        return None;
    }
    certificate.sha256 = seal.to_owned();
    Some(certificate)
}

fn time(timestamp: Option<&picket_proto::pbjson_types::Timestamp>) -> String {
    timestamp
        .and_then(from_timestamp)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "—".into())
}

/// The certificate as a document of `format`: its bytes and media type.
pub fn render(
    certificate: &offboarding::DeletionCertificate,
    format: offboarding::CertificateFormat,
) -> Option<(Vec<u8>, &'static str)> {
    match format {
        offboarding::CertificateFormat::Unspecified => None,
        offboarding::CertificateFormat::Json => Some((
            serde_json::to_vec_pretty(certificate).unwrap_or_default(),
            "application/json",
        )),
        offboarding::CertificateFormat::Markdown => {
            Some((markdown(certificate).into_bytes(), "text/markdown"))
        }
        offboarding::CertificateFormat::Html => {
            Some((html(certificate).into_bytes(), "text/html; charset=utf-8"))
        }
    }
}

fn markdown(certificate: &offboarding::DeletionCertificate) -> String {
    let mut text = format!(
        "# Certificate of deletion\n\n\
         Customer **{}** (tenant `{}`, Microsoft tenant `{}`) of partner `{}` was offboarded.\n\n\
         - Reason: {}\n- Requested: {}\n- Data removal due: {}\n- Purge started: {}\n\
         - Completed: {}\n- Rows deleted: {}\n- Certificate: `{}`, issued {}\n- SHA-256: `{}`\n\n\
         | service | table | rows deleted | confirmed |\n|---|---|---:|---|\n",
        certificate.tenant_display_name,
        certificate.tenant_id,
        certificate.microsoft_tenant_id,
        certificate.partner_id,
        certificate.reason,
        time(certificate.requested_at.as_ref()),
        time(certificate.purge_due_at.as_ref()),
        time(certificate.purge_started_at.as_ref()),
        time(certificate.completed_at.as_ref()),
        certificate.total_rows,
        certificate.certificate_id,
        time(certificate.issued_at.as_ref()),
        certificate.sha256,
    );
    for service in &certificate.services {
        for table in &service.tables {
            text.push_str(&format!(
                "| {} | `{}` | {} | {} |\n",
                service.service,
                table.table,
                table.row_count,
                time(service.confirmed_at.as_ref())
            ));
        }
    }
    text.push_str("\n## Kept on purpose\n\n");
    for kept in &certificate.retained {
        text.push_str(&format!(
            "- {}: {} ({})\n",
            kept.service, kept.description, kept.reason
        ));
    }
    text
}

fn html(certificate: &offboarding::DeletionCertificate) -> String {
    let mut rows = String::new();
    for service in &certificate.services {
        for table in &service.tables {
            rows.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td></tr>\n",
                html_escape(&service.service),
                html_escape(&table.table),
                table.row_count,
                time(service.confirmed_at.as_ref())
            ));
        }
    }
    let kept: String = certificate
        .retained
        .iter()
        .map(|kept| {
            format!(
                "<li>{}: {} ({})</li>",
                html_escape(&kept.service),
                html_escape(&kept.description),
                html_escape(&kept.reason)
            )
        })
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Certificate of deletion: {name}</title>\
         <style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}\
         table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #999;padding:.3em}}\
         .n{{text-align:right}}@media print{{body{{margin:0}}}}</style></head><body>\
         <h1>Certificate of deletion</h1>\
         <p>Customer <strong>{name}</strong> (tenant <code>{tenant}</code>, Microsoft tenant \
         <code>{microsoft}</code>) of partner <code>{partner}</code> was offboarded.</p>\
         <ul><li>Reason: {reason}</li><li>Requested: {requested}</li><li>Data removal due: {due}</li>\
         <li>Completed: {completed}</li><li>Rows deleted: {total}</li>\
         <li>Certificate <code>{id}</code>, issued {issued}</li><li>SHA-256: <code>{seal}</code></li></ul>\
         <table><tr><th>Service</th><th>Table</th><th>Rows deleted</th><th>Confirmed</th></tr>\n{rows}</table>\
         <h2>Kept on purpose</h2><ul>{kept}</ul></body></html>\n",
        name = html_escape(&certificate.tenant_display_name),
        tenant = html_escape(&certificate.tenant_id),
        microsoft = html_escape(&certificate.microsoft_tenant_id),
        partner = html_escape(&certificate.partner_id),
        reason = html_escape(&certificate.reason),
        requested = time(certificate.requested_at.as_ref()),
        due = time(certificate.purge_due_at.as_ref()),
        completed = time(certificate.completed_at.as_ref()),
        total = certificate.total_rows,
        id = html_escape(&certificate.certificate_id),
        issued = time(certificate.issued_at.as_ref()),
        seal = html_escape(&certificate.sha256),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate() -> (offboarding::DeletionCertificate, serde_json::Value) {
        let mut certificate = offboarding::DeletionCertificate {
            certificate_id: "c1".into(),
            tenant_id: "t1".into(),
            tenant_display_name: "Contoso <Dental> & Co".into(),
            services: vec![offboarding::ServiceDeletion {
                service: "scanner".into(),
                tables: vec![offboarding::PurgedTable {
                    table: "scanner.tenants".into(),
                    row_count: 1,
                }],
                total_rows: 1,
                ..Default::default()
            }],
            total_rows: 1,
            retained: retained(),
            ..Default::default()
        };
        let (body, seal) = sealed(certificate.clone());
        certificate.sha256 = seal;
        (certificate, body)
    }

    #[test]
    fn a_certificate_opens_only_with_its_seal() {
        let (certificate, body) = certificate();
        let opened = open(&body, &certificate.sha256).expect("the seal matches");
        assert_eq!(opened, certificate);
        let mut tampered = body.clone();
        tampered["totalRows"] = serde_json::json!("0");
        assert!(
            open(&tampered, &certificate.sha256).is_none(),
            "a changed row count is caught"
        );
    }

    #[test]
    fn documents_escape_what_the_partner_typed() {
        let (certificate, _) = certificate();
        let (html, content_type) =
            render(&certificate, offboarding::CertificateFormat::Html).expect("rendered");
        let html = String::from_utf8(html).expect("UTF-8");
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(html.contains("Contoso &lt;Dental&gt; &amp; Co"), "{html}");
        assert!(!html.contains("<Dental>"));
        let (markdown, _) =
            render(&certificate, offboarding::CertificateFormat::Markdown).expect("rendered");
        assert!(
            String::from_utf8(markdown)
                .expect("UTF-8")
                .contains("| scanner | `scanner.tenants` | 1 |")
        );
        assert!(render(&certificate, offboarding::CertificateFormat::Unspecified).is_none());
    }
}
