//! Reads the UCI Online Retail line file and folds it into invoices (DESIGN §7,
//! `data/README.md`): one invoice per InvoiceNo in order of first appearance,
//! classified as a sale (attributed or not), a credit invoice, or skipped with
//! a reason. Amounts are exact decimals; the invoice total is rounded once to
//! pence, half away from zero.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use accrue_money::{Currency, RoundingMode};
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::London;
use rust_decimal::Decimal;
use serde::Serialize;

/// The line file inside the data directory.
pub const LINE_FILE: &str = "online_retail.csv.gz";

/// Skip reason: an `A…` bad-debt adjustment invoice.
pub const SKIP_ADJUSTMENT: &str = "adjustment";
/// Skip reason: a stock write-off line (plain invoice, price 0, negative
/// quantity, no customer); an invoice made only of such lines is skipped too.
pub const SKIP_WRITE_OFF: &str = "write_off";
/// Skip reason: a plain invoice whose rounded total is ≤ 0.
pub const SKIP_NON_POSITIVE_TOTAL: &str = "non_positive_total";

/// Why the data set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or decompressed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A CSV record could not be read.
    #[error("CSV record {record}: {source}")]
    Csv {
        /// 1-based data record number.
        record: u64,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// A field did not parse.
    #[error("CSV record {record}: column {column} = {value:?}: {message}")]
    Field {
        /// 1-based data record number.
        record: u64,
        /// Column name.
        column: &'static str,
        /// The value as read.
        value: String,
        /// What was wrong.
        message: String,
    },
    /// The data set's currency is unknown to the ISO 4217 table.
    #[error(transparent)]
    Currency(#[from] accrue_money::MoneyError),
    /// The header row is not the expected one.
    #[error(
        "unexpected header {0:?} (expected InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country)"
    )]
    Header(String),
}

/// One line item of the data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// InvoiceNo ("536365", "C541433", "A563185").
    pub invoice_no: String,
    /// StockCode.
    pub stock_code: String,
    /// Quantity (negative on credit lines and write-offs).
    pub quantity: i64,
    /// InvoiceDate, naive UK local time.
    pub invoice_date: NaiveDateTime,
    /// UnitPrice in GBP, exact (may carry 3 decimals).
    pub unit_price: Decimal,
    /// CustomerID normalized ("17850.0" → "17850"); `None` when empty.
    pub customer_id: Option<String>,
}

/// How an invoice is treated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceClass {
    /// A PAYMENT sale for a customer.
    Sale,
    /// A sale without a customer: recorded, earns nothing.
    Unattributed,
    /// A `C…` credit invoice: its lines refund earlier sales (see `refunds`).
    Credit,
    /// Skipped with the given reason.
    Skipped(&'static str),
}

/// One invoice, folded from its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    /// InvoiceNo.
    pub invoice_no: String,
    /// The first line's InvoiceDate (Europe/London) in UTC.
    pub occurred_at: DateTime<Utc>,
    /// Customer external id ("C17850"), from the first line that names one.
    pub customer: Option<String>,
    /// The first counted line's StockCode.
    pub product_code: String,
    /// Σ quantity × unit price of the counted lines, exact.
    pub exact_total: Decimal,
    /// `exact_total` rounded once to pence, half away from zero.
    pub total: Decimal,
    /// Lines of the invoice.
    pub line_count: u64,
    /// Lines skipped as write-offs.
    pub write_off_lines: u64,
    /// The classification.
    pub class: InvoiceClass,
    /// The lines a refund is matched on, in file order: a sale's counted lines
    /// (write-offs excluded), every line of a credit invoice; empty otherwise.
    pub items: Vec<Item>,
}

/// One line of an invoice as refund matching sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// StockCode.
    pub stock_code: String,
    /// Quantity (negative on credit lines).
    pub quantity: i64,
    /// UnitPrice in GBP, exact.
    pub unit_price: Decimal,
}

impl Item {
    fn of(line: &Line) -> Self {
        Item { stock_code: line.stock_code.clone(), quantity: line.quantity, unit_price: line.unit_price }
    }
}

impl Invoice {
    /// The sale's external id: `online-retail:<InvoiceNo>`.
    pub fn external_id(&self) -> String {
        format!("online-retail:{}", self.invoice_no)
    }
}

/// Count of skipped invoices and lines for one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SkipCount {
    /// Whole invoices skipped.
    pub invoices: u64,
    /// Lines skipped (all lines of skipped invoices plus skipped lines of kept invoices).
    pub lines: u64,
}

/// The folded data set.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Every invoice read, in order of first appearance.
    pub invoices: Vec<Invoice>,
    /// Data rows read (of the invoices kept by the limit).
    pub rows: u64,
    /// Skips by reason.
    pub skipped: BTreeMap<&'static str, SkipCount>,
    /// Credit invoices read.
    pub credit_invoices: u64,
    /// Lines of credit invoices.
    pub credit_lines: u64,
}

impl Dataset {
    /// Invoices that become sales (attributed or not), sorted by time (stable:
    /// ties keep file order).
    pub fn sales(&self) -> Vec<&Invoice> {
        let mut sales: Vec<&Invoice> = self
            .invoices
            .iter()
            .filter(|i| matches!(i.class, InvoiceClass::Sale | InvoiceClass::Unattributed))
            .collect();
        sales.sort_by_key(|i| i.occurred_at);
        sales
    }
}

/// Reads `<dir>/online_retail.csv.gz`, keeping the first `limit` invoices (by
/// first appearance) when given.
pub fn load_dir(dir: &Path, limit: Option<usize>) -> Result<Dataset, LoadError> {
    let path = dir.join(LINE_FILE);
    let file =
        std::fs::File::open(&path).map_err(|source| LoadError::Io { path: path.display().to_string(), source })?;
    let reader = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    load_reader(reader, limit)
}

/// Reads the line CSV (with header) from any reader; see [`load_dir`].
pub fn load_reader<R: Read>(reader: R, limit: Option<usize>) -> Result<Dataset, LoadError> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(reader);
    let headers = csv.headers().map_err(|source| LoadError::Csv { record: 0, source })?.clone();
    let expected =
        ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"];
    if headers.iter().map(str::trim).collect::<Vec<_>>() != expected {
        return Err(LoadError::Header(headers.iter().collect::<Vec<_>>().join(",")));
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Line>> = HashMap::new();
    let mut record = csv::StringRecord::new();
    let mut number = 0u64;
    loop {
        let more = csv.read_record(&mut record).map_err(|source| LoadError::Csv { record: number + 1, source })?;
        if !more {
            break;
        }
        number += 1;
        let line = parse_line(number, &record)?;
        if let Some(lines) = groups.get_mut(&line.invoice_no) {
            lines.push(line);
            continue;
        }
        if limit.is_some_and(|limit| order.len() >= limit) {
            continue;
        }
        order.push(line.invoice_no.clone());
        groups.insert(line.invoice_no.clone(), vec![line]);
    }
    let gbp = Currency::from_code("GBP").map_err(LoadError::Currency)?;
    let mut data = Dataset::default();
    for invoice_no in order {
        let lines = groups.remove(&invoice_no).unwrap_or_default();
        data.rows += lines.len() as u64;
        let invoice = fold_invoice(invoice_no, &lines, gbp);
        match &invoice.class {
            InvoiceClass::Credit => {
                data.credit_invoices += 1;
                data.credit_lines += invoice.line_count;
            }
            InvoiceClass::Skipped(reason) => {
                let count = data.skipped.entry(reason).or_default();
                count.invoices += 1;
                count.lines += invoice.line_count - invoice.write_off_lines;
            }
            InvoiceClass::Sale | InvoiceClass::Unattributed => {}
        }
        if invoice.write_off_lines > 0 {
            data.skipped.entry(SKIP_WRITE_OFF).or_default().lines += invoice.write_off_lines;
        }
        data.invoices.push(invoice);
    }
    Ok(data)
}

fn field(record: &csv::StringRecord, index: usize) -> &str {
    record.get(index).unwrap_or("").trim()
}

/// Parses one data record (columns as in the header).
fn parse_line(number: u64, record: &csv::StringRecord) -> Result<Line, LoadError> {
    let bad = |column: &'static str, value: &str, message: &str| LoadError::Field {
        record: number,
        column,
        value: value.to_string(),
        message: message.to_string(),
    };
    let invoice_no = field(record, 0);
    if invoice_no.is_empty() {
        return Err(bad("InvoiceNo", invoice_no, "is empty"));
    }
    let quantity_text = field(record, 3);
    let quantity = quantity_text.parse::<i64>().map_err(|_| bad("Quantity", quantity_text, "not an integer"))?;
    let date_text = field(record, 4);
    let invoice_date = NaiveDateTime::parse_from_str(date_text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(date_text, "%Y-%m-%d %H:%M"))
        .map_err(|_| bad("InvoiceDate", date_text, "expected YYYY-MM-DD HH:MM:SS"))?;
    let price_text = field(record, 5);
    let unit_price = parse_decimal(price_text).ok_or_else(|| bad("UnitPrice", price_text, "not a decimal"))?;
    let customer_text = field(record, 6);
    let customer_id = if customer_text.is_empty() {
        None
    } else {
        Some(normalize_customer(customer_text).ok_or_else(|| bad("CustomerID", customer_text, "not a number"))?)
    };
    Ok(Line {
        invoice_no: invoice_no.to_string(),
        stock_code: field(record, 1).to_string(),
        quantity,
        invoice_date,
        unit_price,
        customer_id,
    })
}

/// Exact decimal from text ("2.55", "0.001", "-11062.06"; scientific notation
/// accepted as exact too).
fn parse_decimal(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok().or_else(|| Decimal::from_scientific(text).ok())
}

/// "17850.0" → "17850" (the data set writes ids as floats); anything with a
/// non-zero fraction is rejected.
fn normalize_customer(text: &str) -> Option<String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let valid = !whole.is_empty() && whole.chars().all(|c| c.is_ascii_digit()) && fraction.chars().all(|c| c == '0');
    valid.then(|| whole.to_string())
}

/// The customer external id used in Accrue: `C` + the numeric id.
pub fn customer_external_id(customer_id: &str) -> String {
    format!("C{customer_id}")
}

/// Naive Europe/London time → UTC. An ambiguous time (the autumn hour) takes
/// the earlier instant; a time in the spring gap is read one hour later.
pub fn london_to_utc(naive: NaiveDateTime) -> DateTime<Utc> {
    match London.from_local_datetime(&naive) {
        LocalResult::Single(time) => time.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            let shifted = naive + chrono::Duration::hours(1);
            London
                .from_local_datetime(&shifted)
                .earliest()
                .map_or_else(|| DateTime::<Utc>::from_naive_utc_and_offset(naive, Utc), |time| time.with_timezone(&Utc))
        }
    }
}

/// Whether a line is a stock write-off: price 0, negative quantity, no customer.
fn is_write_off(line: &Line) -> bool {
    line.unit_price.is_zero() && line.quantity < 0 && line.customer_id.is_none()
}

/// Folds one invoice's lines and classifies it (DESIGN §7).
pub fn fold_invoice(invoice_no: String, lines: &[Line], gbp: Currency) -> Invoice {
    let first = lines.first();
    let occurred_at = first.map_or_else(Utc::now, |l| london_to_utc(l.invoice_date));
    let customer = lines.iter().find_map(|l| l.customer_id.as_deref()).map(customer_external_id);
    let line_count = lines.len() as u64;
    let mut invoice = Invoice {
        invoice_no: invoice_no.clone(),
        occurred_at,
        customer,
        product_code: first.map(|l| l.stock_code.clone()).unwrap_or_default(),
        exact_total: Decimal::ZERO,
        total: Decimal::ZERO,
        line_count,
        write_off_lines: 0,
        class: InvoiceClass::Skipped(SKIP_NON_POSITIVE_TOTAL),
        items: Vec::new(),
    };
    let exact: Decimal = lines.iter().map(|l| Decimal::from(l.quantity) * l.unit_price).sum();
    invoice.exact_total = exact;
    invoice.total = gbp.round(exact, RoundingMode::HalfAwayFromZero);
    if invoice_no.starts_with('A') {
        invoice.class = InvoiceClass::Skipped(SKIP_ADJUSTMENT);
        return invoice;
    }
    if invoice_no.starts_with('C') {
        invoice.class = InvoiceClass::Credit;
        invoice.items = lines.iter().map(Item::of).collect();
        return invoice;
    }
    let counted: Vec<&Line> = lines.iter().filter(|l| !is_write_off(l)).collect();
    invoice.write_off_lines = line_count - counted.len() as u64;
    if counted.is_empty() {
        // Every line is a write-off: the invoice is skipped as one; its lines
        // are already counted as write-off lines.
        invoice.class = InvoiceClass::Skipped(SKIP_WRITE_OFF);
        return invoice;
    }
    let exact: Decimal = counted.iter().map(|l| Decimal::from(l.quantity) * l.unit_price).sum();
    invoice.exact_total = exact;
    invoice.total = gbp.round(exact, RoundingMode::HalfAwayFromZero);
    invoice.product_code = counted[0].stock_code.clone();
    invoice.class = if invoice.total <= Decimal::ZERO {
        InvoiceClass::Skipped(SKIP_NON_POSITIVE_TOTAL)
    } else if invoice.customer.is_some() {
        InvoiceClass::Sale
    } else {
        InvoiceClass::Unattributed
    };
    if invoice.class == InvoiceClass::Sale {
        invoice.items = counted.iter().map(|l| Item::of(l)).collect();
    }
    invoice
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rust_decimal_macros::dec;

    const SAMPLE: &str = "\
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
541431,23166,MEDIUM CERAMIC TOP STORAGE JAR,74215,2011-01-18 10:01:00,1.04,12346.0,United Kingdom
C541433,23166,MEDIUM CERAMIC TOP STORAGE JAR,-74215,2011-01-18 10:17:00,1.04,12346.0,United Kingdom
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536414,22139,,56,2010-12-01 11:52:00,0,,United Kingdom
536999,21275,,-20,2010-12-03 10:00:00,0,,United Kingdom
536999,21276,,-5,2010-12-03 10:00:00,0,,United Kingdom
537000,21277,\"DOILY, PAPER\",-3,2010-12-03 11:00:00,0,,United Kingdom
537000,21278,PAPER,10,2010-12-03 11:00:00,0.5,,United Kingdom
A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,,United Kingdom
A563186,B,Adjust bad debt,1,2011-08-12 14:51:00,-11062.06,,United Kingdom
550193,PADS,PADS TO MATCH ALL CUSHIONS,1,2011-04-15 09:27:00,0.001,13952.0,United Kingdom
550194,PADS,PADS TO MATCH ALL CUSHIONS,5,2011-04-15 09:28:00,0.001,13952.0,United Kingdom
550195,PADS,PADS TO MATCH ALL CUSHIONS,3,2011-07-15 09:28:00,1.005,13952.0,United Kingdom
536365,84406B,CREAM CUPID HEARTS COAT HANGER,8,2010-12-01 08:26:00,2.75,17850.0,United Kingdom
";

    fn load() -> Dataset {
        load_reader(SAMPLE.as_bytes(), None).unwrap()
    }

    fn find<'a>(data: &'a Dataset, no: &str) -> &'a Invoice {
        data.invoices.iter().find(|i| i.invoice_no == no).unwrap()
    }

    #[test]
    fn groups_by_invoice_in_first_appearance_order() {
        let data = load();
        let numbers: Vec<&str> = data.invoices.iter().map(|i| i.invoice_no.as_str()).collect();
        assert_eq!(
            numbers,
            [
                "541431", "C541433", "536365", "536414", "536999", "537000", "A563185", "A563186", "550193", "550194",
                "550195"
            ]
        );
        assert_eq!(data.rows, 15);
        // 536365's last line comes after other invoices but still belongs to it.
        let first = find(&data, "536365");
        assert_eq!(first.line_count, 3);
        assert_eq!(first.total, dec!(57.64)); // 6×2.55 + 6×3.39 + 8×2.75
        assert_eq!(first.product_code, "85123A");
        assert_eq!(first.customer.as_deref(), Some("C17850"));
        assert_eq!(first.external_id(), "online-retail:536365");
        assert_eq!(first.class, InvoiceClass::Sale);
    }

    #[test]
    fn classifies_the_541431_pair() {
        let data = load();
        let sale = find(&data, "541431");
        assert_eq!(sale.class, InvoiceClass::Sale);
        assert_eq!(sale.total, dec!(77183.60));
        assert_eq!(sale.customer.as_deref(), Some("C12346"));
        // 10:01 in January is GMT: same wall time in UTC.
        assert_eq!(sale.occurred_at.to_rfc3339(), "2011-01-18T10:01:00+00:00");
        let credit = find(&data, "C541433");
        assert_eq!(credit.class, InvoiceClass::Credit);
        assert_eq!(data.credit_invoices, 1);
        assert_eq!(data.credit_lines, 1);
    }

    #[test]
    fn skips_write_offs_adjustments_and_non_positive_totals() {
        let data = load();
        assert_eq!(find(&data, "536999").class, InvoiceClass::Skipped(SKIP_WRITE_OFF));
        assert_eq!(find(&data, "A563185").class, InvoiceClass::Skipped(SKIP_ADJUSTMENT));
        assert_eq!(find(&data, "A563186").class, InvoiceClass::Skipped(SKIP_ADJUSTMENT));
        // Price 0 with a positive quantity is not a write-off, but totals 0.
        assert_eq!(find(&data, "536414").class, InvoiceClass::Skipped(SKIP_NON_POSITIVE_TOTAL));
        // A mixed invoice keeps its real line, unattributed (no customer).
        let mixed = find(&data, "537000");
        assert_eq!(mixed.class, InvoiceClass::Unattributed);
        assert_eq!(mixed.write_off_lines, 1);
        assert_eq!(mixed.total, dec!(5.00));
        assert_eq!(mixed.product_code, "21278");
        assert_eq!(data.skipped[SKIP_WRITE_OFF], SkipCount { invoices: 1, lines: 3 });
        assert_eq!(data.skipped[SKIP_ADJUSTMENT], SkipCount { invoices: 2, lines: 2 });
        // 536414 and 550193 (1 × 0.001 → 0.00).
        assert_eq!(data.skipped[SKIP_NON_POSITIVE_TOTAL], SkipCount { invoices: 2, lines: 2 });
    }

    #[test]
    fn three_decimal_prices_are_exact_and_rounded_once() {
        let data = load();
        let tiny = find(&data, "550193");
        assert_eq!(tiny.exact_total, dec!(0.001));
        assert_eq!(tiny.class, InvoiceClass::Skipped(SKIP_NON_POSITIVE_TOTAL));
        let five = find(&data, "550194");
        assert_eq!(five.exact_total, dec!(0.005));
        assert_eq!(five.total, dec!(0.01)); // half away from zero
        assert_eq!(five.class, InvoiceClass::Sale);
        let summer = find(&data, "550195");
        assert_eq!(summer.exact_total, dec!(3.015));
        assert_eq!(summer.total, dec!(3.02));
        // 09:28 BST in July is 08:28 UTC.
        assert_eq!(summer.occurred_at.to_rfc3339(), "2011-07-15T08:28:00+00:00");
    }

    #[test]
    fn sales_are_sorted_by_time_and_limit_counts_invoices() {
        let data = load();
        let sales: Vec<&str> = data.sales().iter().map(|i| i.invoice_no.as_str()).collect();
        assert_eq!(sales, ["536365", "537000", "541431", "550194", "550195"]);
        let limited = load_reader(SAMPLE.as_bytes(), Some(3)).unwrap();
        assert_eq!(limited.invoices.len(), 3);
        assert_eq!(find(&limited, "536365").line_count, 3);
        assert_eq!(limited.rows, 5);
    }

    #[test]
    fn london_times_convert_across_daylight_saving() {
        let at = |s: &str| london_to_utc(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()).to_rfc3339();
        assert_eq!(at("2011-03-27 01:30:00"), "2011-03-27T01:30:00+00:00"); // gap → 02:30 BST
        assert_eq!(at("2011-10-30 01:30:00"), "2011-10-30T00:30:00+00:00"); // ambiguous → earlier (BST)
    }

    /// The full data set's known figures (data/README.md), when the bundled copy is present.
    #[test]
    fn full_data_set_matches_the_known_figures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/uci_online_retail");
        let dir = if dir.join(LINE_FILE).is_file() {
            dir
        } else {
            std::path::PathBuf::from("/work/shared/data/uci_online_retail")
        };
        if !dir.join(LINE_FILE).is_file() {
            eprintln!("skipping: no data set at {}", dir.display());
            return;
        }
        let data = load_dir(&dir, None).unwrap();
        assert_eq!(data.rows, 541_909);
        assert_eq!(data.invoices.len(), 25_900);
        assert_eq!(data.credit_invoices, 3_836);
        assert_eq!(data.credit_lines, 9_288);
        assert_eq!(data.skipped[SKIP_ADJUSTMENT].invoices, 3);
        assert_eq!(data.skipped[SKIP_WRITE_OFF].lines, 1_336);
        let accounted =
            data.sales().len() as u64 + data.credit_invoices + data.skipped.values().map(|s| s.invoices).sum::<u64>();
        assert_eq!(accounted, 25_900);
    }

    #[test]
    fn normalizes_customer_ids() {
        assert_eq!(normalize_customer("17850.0").as_deref(), Some("17850"));
        assert_eq!(normalize_customer("12346").as_deref(), Some("12346"));
        assert_eq!(normalize_customer("12346.5"), None);
        assert_eq!(normalize_customer("x"), None);
    }
}
