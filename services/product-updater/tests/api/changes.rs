use product_updater::catalog_changes::CATEGORIES;
use rust_decimal::Decimal;

use crate::helpers::{
    env_for, fresh_database, products, repository_csv, repository_rows, RunningApp, PATIENCE,
};

#[tokio::test]
async fn with_a_positive_rate_the_catalog_keeps_changing() {
    let (db, mut conn) = fresh_database().await;
    let app = RunningApp::start(env_for(&db.url, &repository_csv(), "200")).await;
    app.wait_for_seed().await;

    // Wait until every kind of change has been applied a few times.
    let applied = testkit::wait_until(
        PATIENCE,
        "price, category and new-product changes",
        || async {
            let text = app.metrics_text().await;
            let count = |kind: &str| {
                crate::helpers::sample_value(
                    &text,
                    &format!("product_updater_updates_applied_total{{kind=\"{kind}\"}}"),
                )
                .unwrap_or(0.0)
            };
            let (price, category, new_product) =
                (count("price"), count("category"), count("new_product"));
            (price >= 20.0 && category >= 3.0 && new_product >= 2.0).then_some((
                price,
                category,
                new_product,
            ))
        },
    )
    .await;
    app.stop().await.expect("clean stop");

    let rows = products(&mut conn).await;
    let seeded_ids = 1..=50;
    // New products got the next ids, one after another.
    let new_rows: Vec<_> = rows
        .iter()
        .filter(|p| !seeded_ids.contains(&p.id))
        .collect();
    assert!(
        new_rows.len() as f64 >= applied.2,
        "{} new rows, {applied:?} applied",
        new_rows.len()
    );
    for (offset, product) in new_rows.iter().enumerate() {
        assert_eq!(product.id, 51 + offset as i32);
        assert_eq!(product.name, format!("Product_{}", product.id));
    }
    // Every product's last change was stamped by the database, after the seed; prices moved.
    let seed_stamp = rows.iter().map(|p| p.last_updated).min().expect("rows");
    let changed = rows.iter().filter(|p| p.last_updated > seed_stamp).count();
    assert!(
        changed > new_rows.len(),
        "existing products were changed too ({changed} rows changed)"
    );
    let original: std::collections::HashMap<i32, Decimal> = repository_rows()
        .into_iter()
        .map(|(id, _, _, price)| (id, price))
        .collect();
    let repriced = rows
        .iter()
        .filter(|p| original.get(&p.id).is_some_and(|price| *price != p.price))
        .count();
    assert!(repriced > 0, "some seeded prices changed");
    for product in &rows {
        assert!(
            product.price >= Decimal::new(1, 2) && product.price <= Decimal::new(9_999_999_999, 2),
            "{product:?}"
        );
        let category = product
            .category
            .as_deref()
            .expect("every product has a category");
        assert!(CATEGORIES.contains(&category), "{product:?}");
    }

    db.drop_database().await;
}
