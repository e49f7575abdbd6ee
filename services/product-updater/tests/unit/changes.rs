use std::collections::HashMap;

use product_updater::catalog_changes::{plan_change, Change, ChangeKind, CATEGORIES};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rust_decimal::Decimal;

#[test]
fn plans_are_mostly_price_changes_and_stay_within_bounds() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut kinds: HashMap<ChangeKind, usize> = HashMap::new();
    let plans = 10_000;
    for _ in 0..plans {
        let change = plan_change(&mut rng, Some((5, 50)));
        *kinds.entry(change.kind()).or_default() += 1;
        match change {
            Change::Price {
                from_id,
                direction,
                fraction,
            } => {
                assert!((5..=50).contains(&from_id));
                assert!(direction == 1 || direction == -1);
                assert!(
                    fraction >= Decimal::new(1, 3) && fraction <= Decimal::new(5, 2),
                    "{fraction}"
                );
            }
            Change::Category {
                from_id,
                category,
                alternative,
            } => {
                assert!((5..=50).contains(&from_id));
                assert_ne!(
                    category, alternative,
                    "the alternative guarantees a real change"
                );
                assert!(CATEGORIES.contains(&category) && CATEGORIES.contains(&alternative));
            }
            Change::NewProduct { category, price } => {
                assert!(CATEGORIES.contains(&category));
                assert!(
                    price >= Decimal::ONE && price <= Decimal::ONE_HUNDRED,
                    "{price}"
                );
            }
        }
    }
    let price = kinds[&ChangeKind::Price];
    let category = kinds[&ChangeKind::Category];
    let new_product = kinds[&ChangeKind::NewProduct];
    assert_eq!(price + category + new_product, plans);
    assert!(
        price > category && category > new_product && new_product > 0,
        "{kinds:?}"
    );
}

#[test]
fn an_empty_catalog_only_gets_new_products() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..100 {
        assert_eq!(plan_change(&mut rng, None).kind(), ChangeKind::NewProduct);
    }
}
