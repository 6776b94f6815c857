//! The worksheet an MSP discusses internally: one row per stage with its owners, and the gaps
//! highlighted; as Markdown, CSV (RFC 4180) or a printable HTML page.

use picket_platform::text::{csv_field, html_escape};
use picket_proto::incidents::v1::{AuthorityGap, AuthorityMap, AuthorityStage, WorksheetFormat};

use super::gaps::stage_name;
use super::standard::STAGES;

struct Row {
    stage: &'static str,
    responsible: String,
    accountable: String,
    consulted: String,
    informed: String,
    notes: String,
    gaps: Vec<String>,
}

fn rows(map: &AuthorityMap, gaps: &[AuthorityGap]) -> Vec<Row> {
    let name = |owner_id: &String| {
        map.owners
            .iter()
            .find(|owner| &owner.owner_id == owner_id)
            .map_or_else(
                || format!("{owner_id} (undefined)"),
                |owner| owner.display_name.clone(),
            )
    };
    let names = |owner_ids: &[String]| owner_ids.iter().map(name).collect::<Vec<_>>().join("; ");
    STAGES
        .iter()
        .map(|stage| {
            let assignment = map
                .stages
                .iter()
                .find(|assignment| assignment.stage() == *stage);
            let owners: Vec<&String> = assignment
                .map(|assignment| {
                    assignment
                        .responsible_owner_ids
                        .iter()
                        .chain(&assignment.accountable_owner_ids)
                        .collect()
                })
                .unwrap_or_default();
            let gaps = gaps
                .iter()
                .filter(|gap| {
                    gap.stage() == *stage
                        || (gap.stage() == AuthorityStage::Unspecified
                            && !gap.owner_id.is_empty()
                            && owners.contains(&&gap.owner_id))
                })
                .map(|gap| gap.message.clone())
                .collect();
            Row {
                stage: stage_name(*stage),
                responsible: assignment
                    .map(|a| names(&a.responsible_owner_ids))
                    .unwrap_or_default(),
                accountable: assignment
                    .map(|a| names(&a.accountable_owner_ids))
                    .unwrap_or_default(),
                consulted: assignment
                    .map(|a| names(&a.consulted_owner_ids))
                    .unwrap_or_default(),
                informed: assignment
                    .map(|a| names(&a.informed_owner_ids))
                    .unwrap_or_default(),
                notes: assignment.map(|a| a.notes.clone()).unwrap_or_default(),
                gaps,
            }
        })
        .collect()
}

/// Gaps that concern no stage (escalation chains, unknown owners), listed under the table.
fn other_gaps<'a>(gaps: &'a [AuthorityGap], rows: &[Row]) -> Vec<&'a str> {
    gaps.iter()
        .map(|gap| gap.message.as_str())
        .filter(|message| {
            !rows
                .iter()
                .any(|row| row.gaps.iter().any(|gap| gap == message))
        })
        .collect()
}

/// The worksheet of `map` with its `gaps`: the document, its media type and a file name.
pub fn worksheet(
    map: &AuthorityMap,
    gaps: &[AuthorityGap],
    format: WorksheetFormat,
) -> (Vec<u8>, &'static str, String) {
    let rows = rows(map, gaps);
    let base = if map.tenant_id.is_empty() {
        format!(
            "authority-map-{}",
            if map.partner_id.is_empty() {
                "standard"
            } else {
                &map.partner_id
            }
        )
    } else {
        format!("authority-map-{}-{}", map.partner_id, map.tenant_id)
    };
    match format {
        WorksheetFormat::Csv => (csv(&rows).into_bytes(), "text/csv", format!("{base}.csv")),
        WorksheetFormat::Html => (
            html(map, &rows, gaps).into_bytes(),
            "text/html; charset=utf-8",
            format!("{base}.html"),
        ),
        WorksheetFormat::Markdown | WorksheetFormat::Unspecified => (
            markdown(&rows, gaps).into_bytes(),
            "text/markdown",
            format!("{base}.md"),
        ),
    }
}

fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn markdown(rows: &[Row], gaps: &[AuthorityGap]) -> String {
    let mut text = String::from(
        "| Stage | Responsible | Accountable | Consulted | Informed | Notes | Gaps |\n|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let gaps = if row.gaps.is_empty() {
            String::new()
        } else {
            format!("**⚠ {}**", row.gaps.join("; "))
        };
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.stage,
            markdown_cell(&row.responsible),
            markdown_cell(&row.accountable),
            markdown_cell(&row.consulted),
            markdown_cell(&row.informed),
            markdown_cell(&row.notes),
            markdown_cell(&gaps),
        ));
    }
    let others = other_gaps(gaps, rows);
    if !others.is_empty() {
        text.push_str("\nOther gaps:\n\n");
        for gap in others {
            text.push_str(&format!("- ⚠ {}\n", markdown_cell(gap)));
        }
    }
    text
}

fn csv(rows: &[Row]) -> String {
    let mut text = String::from("stage,responsible,accountable,consulted,informed,notes,gaps\r\n");
    for row in rows {
        let fields = [
            row.stage.to_owned(),
            row.responsible.clone(),
            row.accountable.clone(),
            row.consulted.clone(),
            row.informed.clone(),
            row.notes.clone(),
            row.gaps.join("; "),
        ];
        let fields: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        text.push_str(&fields.join(","));
        text.push_str("\r\n");
    }
    text
}

fn html(map: &AuthorityMap, rows: &[Row], gaps: &[AuthorityGap]) -> String {
    let title = if map.partner_id.is_empty() {
        "Standard incident-response authority map".to_owned()
    } else if map.tenant_id.is_empty() {
        format!("Incident-response authority map of {}", map.partner_id)
    } else {
        format!(
            "Incident-response authority map of {} for tenant {}",
            map.partner_id, map.tenant_id
        )
    };
    let mut body = String::new();
    for row in rows {
        let class = if row.gaps.is_empty() {
            ""
        } else {
            " class=\"gap\""
        };
        body.push_str(&format!(
            "<tr{class}><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html_escape(row.stage),
            html_escape(&row.responsible),
            html_escape(&row.accountable),
            html_escape(&row.consulted),
            html_escape(&row.informed),
            html_escape(&row.notes),
            html_escape(&row.gaps.join("; ")),
        ));
    }
    let others: String = other_gaps(gaps, rows)
        .iter()
        .map(|gap| format!("<li class=\"gap\">{}</li>", html_escape(gap)))
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}\
         td,th{{border:1px solid #999;padding:.3em;vertical-align:top;text-align:left}}\
         .gap{{background:#fde2e1}}@media print{{body{{margin:0}}}}</style></head><body>\
         <h1>{title}</h1><p>Version {version}{standard}.</p>\
         <table><tr><th>Stage</th><th>Responsible</th><th>Accountable</th><th>Consulted</th>\
         <th>Informed</th><th>Notes</th><th>Gaps</th></tr>\n{body}</table>\
         <h2>Other gaps</h2><ul>{others}</ul></body></html>\n",
        title = html_escape(&title),
        version = map.version,
        standard = if map.standard {
            ", the standard map"
        } else {
            ""
        },
    )
}
