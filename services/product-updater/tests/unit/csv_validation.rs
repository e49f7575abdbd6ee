use std::path::Path;
use std::str::FromStr;

use product_updater::product_csv::{
    CsvRecord, NewProduct, ProductCsvReader, RejectReason, RejectedRow, SeedFileError, SeedRow,
};
use rust_decimal::Decimal;

const HEADER: &str = "id,name,category,price,last_updated";

/// Every record of `input`, read through the validator.
fn read_all(input: &[u8]) -> Vec<CsvRecord> {
    ProductCsvReader::from_reader(Path::new("test.csv"), input)
        .expect("header is valid")
        .collect::<Result<Vec<_>, _>>()
        .expect("no I/O errors")
}

fn valid(records: &[CsvRecord]) -> Vec<&SeedRow> {
    records
        .iter()
        .filter_map(|r| match r {
            CsvRecord::Valid(row) => Some(row),
            CsvRecord::Rejected(_) => None,
        })
        .collect()
}

fn rejected(records: &[CsvRecord]) -> Vec<&RejectedRow> {
    records
        .iter()
        .filter_map(|r| match r {
            CsvRecord::Rejected(row) => Some(row),
            CsvRecord::Valid(_) => None,
        })
        .collect()
}

fn price(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

#[test]
fn valid_rows_become_products_with_their_line_numbers() {
    let input = format!(
        "{HEADER}\n1,Product_1,Cat_1,40.6,2023-10-13 10:01:05\n2, Product_2 ,,19.68,2023-10-13 10:02:15\n"
    );
    let records = read_all(input.as_bytes());
    assert_eq!(
        records,
        vec![
            CsvRecord::Valid(SeedRow {
                line: 2,
                product: NewProduct {
                    id: 1,
                    name: "Product_1".into(),
                    category: Some("Cat_1".into()),
                    price: price("40.6"),
                },
            }),
            CsvRecord::Valid(SeedRow {
                line: 3,
                product: NewProduct {
                    id: 2,
                    name: "Product_2".into(),
                    category: None,
                    price: price("19.68"),
                },
            }),
        ]
    );
}

/// Each bad row sits between two good ones: it is rejected for its reason, on its line, and the good
/// rows around it are kept.
#[test]
fn each_bad_row_is_rejected_with_its_reason_and_line() {
    let long_name = "x".repeat(256);
    let long_category = "c".repeat(256);
    let cases: Vec<(String, RejectReason)> = vec![
        ("5,Product_5,Cat_1,19.68".into(), RejectReason::ColumnCount),
        (
            "5,Product_5,Cat_1,19.68,2023-10-13 10:02:15,extra".into(),
            RejectReason::ColumnCount,
        ),
        (
            "abc,Product_5,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::InvalidId,
        ),
        (
            "2.5,Product_5,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::InvalidId,
        ),
        (
            "0,Product_5,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::InvalidId,
        ),
        (
            "-7,Product_5,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::InvalidId,
        ),
        (
            "3000000000,Product_5,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::InvalidId,
        ),
        (
            ",Product_5,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::InvalidId,
        ),
        (
            "5,,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::EmptyName,
        ),
        (
            "5,   ,Cat_1,1.00,2023-10-13 10:02:15".into(),
            RejectReason::EmptyName,
        ),
        (
            format!("5,{long_name},Cat_1,1.00,2023-10-13 10:02:15"),
            RejectReason::ValueTooLong,
        ),
        (
            format!("5,Product_5,{long_category},1.00,2023-10-13 10:02:15"),
            RejectReason::ValueTooLong,
        ),
        (
            "5,Product_5,Cat_1,abc,2023-10-13 10:02:15".into(),
            RejectReason::InvalidPrice,
        ),
        (
            "5,Product_5,Cat_1,,2023-10-13 10:02:15".into(),
            RejectReason::InvalidPrice,
        ),
        (
            "5,Product_5,Cat_1,NaN,2023-10-13 10:02:15".into(),
            RejectReason::InvalidPrice,
        ),
        (
            "5,Product_5,Cat_1,inf,2023-10-13 10:02:15".into(),
            RejectReason::InvalidPrice,
        ),
        (
            "5,Product_5,Cat_1,-inf,2023-10-13 10:02:15".into(),
            RejectReason::InvalidPrice,
        ),
        (
            "5,Product_5,Cat_1,-0.01,2023-10-13 10:02:15".into(),
            RejectReason::NegativePrice,
        ),
        (
            "5,Product_5,Cat_1,100000000.00,2023-10-13 10:02:15".into(),
            RejectReason::PriceOutOfRange,
        ),
        (
            "5,Product_5,Cat_1,1.234,2023-10-13 10:02:15".into(),
            RejectReason::PriceTooPrecise,
        ),
        (
            "5,Product_5,Cat_1,1.00,yesterday".into(),
            RejectReason::InvalidTimestamp,
        ),
        (
            "5,Product_5,Cat_1,1.00,2023-13-45 99:00:00".into(),
            RejectReason::InvalidTimestamp,
        ),
    ];
    for (row, reason) in cases {
        let input = format!(
            "{HEADER}\n1,Good_1,Cat_1,1.00,2023-10-13 10:01:05\n{row}\n3,Good_3,Cat_3,3.00,\n"
        );
        let records = read_all(input.as_bytes());
        let bad = rejected(&records);
        assert_eq!(bad.len(), 1, "{row:?} -> {records:?}");
        assert_eq!(
            (bad[0].line, bad[0].reason),
            (3, reason),
            "{row:?}: {}",
            bad[0].detail
        );
        assert!(!bad[0].detail.is_empty());
        let good: Vec<_> = valid(&records)
            .iter()
            .map(|r| (r.line, r.product.id))
            .collect();
        assert_eq!(good, [(2, 1), (4, 3)], "{row:?}");
    }
}

#[test]
fn non_utf8_bytes_reject_only_their_row() {
    let mut input = format!("{HEADER}\n1,Good_1,Cat_1,1.00,2023-10-13 10:01:05\n").into_bytes();
    input.extend_from_slice(b"2,Caf\xe9,Cat_2,2.00,2023-10-13 10:01:05\n");
    input.extend_from_slice(b"3,Good_3,Cat_\xff\xfe,3.00,2023-10-13 10:01:05\n");
    input.extend_from_slice("4,Café_4,Cat_4,4.00,2023-10-13 10:01:05\n".as_bytes());
    let records = read_all(&input);
    let bad: Vec<_> = rejected(&records)
        .iter()
        .map(|r| (r.line, r.reason))
        .collect();
    assert_eq!(
        bad,
        [(3, RejectReason::NonUtf8), (4, RejectReason::NonUtf8)]
    );
    let good: Vec<_> = valid(&records)
        .iter()
        .map(|r| (r.line, r.product.name.clone()))
        .collect();
    assert_eq!(good, [(2, "Good_1".to_owned()), (5, "Café_4".to_owned())]);
}

#[test]
fn boundary_values_are_accepted() {
    let name_255 = "n".repeat(255);
    let input = format!(
        "{HEADER}\n\
         1,Free,Cat_1,0,2023-10-13 10:01:05\n\
         2,Dearest,Cat_1,99999999.99,2023-10-13T10:01:05Z\n\
         3,{name_255},Cat_1,1.500,\n\
         4,Micro,,2.5,2023-10-13 10:01:05.123456\n\
         5,Scientific,Cat_2,12.5e1,\n\
         2147483647,Last,Cat_8,-0,2023-10-13T10:01:05+02:00\n"
    );
    let records = read_all(input.as_bytes());
    assert!(rejected(&records).is_empty(), "{records:?}");
    let prices: Vec<_> = valid(&records)
        .iter()
        .map(|r| (r.product.id, r.product.price))
        .collect();
    assert_eq!(
        prices,
        [
            (1, Decimal::ZERO),
            (2, price("99999999.99")),
            (3, price("1.5")),
            (4, price("2.5")),
            (5, price("125")),
            (i32::MAX, Decimal::ZERO),
        ]
    );
}

#[test]
fn a_repeated_id_keeps_the_first_row() {
    let input = format!(
        "{HEADER}\n7,First,Cat_1,1.00,2023-10-13 10:01:05\n8,Other,Cat_2,2.00,\n7,Second,Cat_3,3.00,\n"
    );
    let records = read_all(input.as_bytes());
    let good: Vec<_> = valid(&records)
        .iter()
        .map(|r| (r.product.id, r.product.name.clone()))
        .collect();
    assert_eq!(good, [(7, "First".to_owned()), (8, "Other".to_owned())]);
    let bad: Vec<_> = rejected(&records)
        .iter()
        .map(|r| (r.line, r.reason))
        .collect();
    assert_eq!(bad, [(4, RejectReason::DuplicateId)]);
}

#[test]
fn line_numbers_count_physical_lines_across_quoted_newlines() {
    let input = format!("{HEADER}\n1,\"Two\nline name\",Cat_1,1.00,\n2,Next,Cat_2,oops,\n\n3,After blank,Cat_3,3.00,\n");
    let records = read_all(input.as_bytes());
    let good: Vec<_> = valid(&records)
        .iter()
        .map(|r| (r.line, r.product.id))
        .collect();
    assert_eq!(good, [(2, 1), (6, 3)]);
    let bad: Vec<_> = rejected(&records)
        .iter()
        .map(|r| (r.line, r.reason))
        .collect();
    assert_eq!(bad, [(4, RejectReason::InvalidPrice)]);
}

#[test]
fn crlf_line_endings_keep_line_numbers_right() {
    let input = format!("{HEADER}\r\n1,A,Cat_1,1.00,\r\n2,B,Cat_2,bad,\r\n\r\n3,\"C\r\nD\",Cat_3,3.00,\r\n4,E,Cat_4,x,\r\n");
    let records = read_all(input.as_bytes());
    let lines: Vec<_> = records
        .iter()
        .map(|r| match r {
            CsvRecord::Valid(row) => (row.line, row.product.id.to_string()),
            CsvRecord::Rejected(row) => (row.line, row.reason.label().to_owned()),
        })
        .collect();
    assert_eq!(
        lines,
        [
            (2, "1".to_owned()),
            (3, "invalid_price".to_owned()),
            (5, "3".to_owned()),
            (7, "invalid_price".to_owned()),
        ]
    );
}

#[test]
fn columns_are_found_by_name_in_any_order_and_case() {
    let input = "\u{feff}Price, NAME ,ID\n12.50,Reordered,42\n";
    let records = read_all(input.as_bytes());
    assert_eq!(
        records,
        [CsvRecord::Valid(SeedRow {
            line: 2,
            product: NewProduct {
                id: 42,
                name: "Reordered".into(),
                category: None,
                price: price("12.50"),
            },
        })]
    );
}

#[test]
fn a_missing_required_column_names_the_file_and_the_column() {
    for (header, column) in [
        ("id,name,category,last_updated", "price"),
        ("name,price", "id"),
        ("id,price", "name"),
    ] {
        let input = format!("{header}\n");
        let error = ProductCsvReader::from_reader(Path::new("data/custom.csv"), input.as_bytes())
            .err()
            .expect("header is rejected");
        assert!(
            matches!(&error, SeedFileError::MissingColumn { column: c, .. } if *c == column),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("data/custom.csv"), "{message}");
        assert!(message.contains(&format!("`{column}`")), "{message}");
    }
}

#[test]
fn a_missing_file_is_reported_with_its_path() {
    let error = ProductCsvReader::open(Path::new("/nonexistent/products.csv"))
        .err()
        .expect("open fails");
    let message = error.to_string();
    assert!(message.contains("/nonexistent/products.csv"), "{message}");
    assert!(message.contains("PRODUCTS_CSV"), "{message}");
}

#[test]
fn reject_reason_labels_are_distinct_snake_case() {
    let labels: std::collections::HashSet<_> =
        RejectReason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), RejectReason::ALL.len());
    assert!(labels.iter().all(|l| l
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')));
}
