//! The changes the updater makes to the catalog, each one autocommitted statement, so the database
//! stamps `last_updated` for every change:
//!
//! - **price** (85 %): a product's price moves up or down by 0.1 % to 5 % (at least one cent). If the
//!   move would leave `0.01 ..= 99999999.99` it goes the other way, so the price always changes and
//!   stays in range.
//! - **category** (12 %): a product moves to another of `Cat_1` .. `Cat_8`.
//! - **new_product** (3 %): a product with the next id (`Product_<id>`, a random category, a price
//!   from 1.00 to 100.00).
//!
//! The product to change is the first with an id at or above a random id between the lowest and
//! highest known ids, found through the primary key without reading the table.
//! One updater per database is assumed: a second one would hand out the same new ids; the loser of
//! such a race gets a duplicate-key error, counted as a database error, and re-reads the highest id.

use std::sync::atomic::{AtomicI32, Ordering};

use rand::seq::IndexedRandom;
use rand::Rng;
use rust_decimal::Decimal;
use sqlx::MySqlPool;

/// The kinds of change, the `kind` label of `product_updater_updates_applied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Price,
    Category,
    NewProduct,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 3] = [Self::Price, Self::Category, Self::NewProduct];

    pub fn label(self) -> &'static str {
        match self {
            Self::Price => "price",
            Self::Category => "category",
            Self::NewProduct => "new_product",
        }
    }
}

/// The categories changes pick from.
pub const CATEGORIES: [&str; 8] = [
    "Cat_1", "Cat_2", "Cat_3", "Cat_4", "Cat_5", "Cat_6", "Cat_7", "Cat_8",
];

/// Out of 100 changes, how many are price changes and how many category changes; the rest are new
/// products.
const PRICE_CHANGES_PERCENT: u32 = 85;
const CATEGORY_CHANGES_PERCENT: u32 = 12;

/// One change, decided but not yet applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Move the price of the first product with `id >= from_id` by `fraction` of itself (rounded to
    /// cents, at least 0.01) in `direction` (+1 or -1), or the other way if that leaves the range.
    Price {
        from_id: i32,
        direction: i32,
        fraction: Decimal,
    },
    /// Set the category of the first product with `id >= from_id` to `category`, or to `alternative`
    /// if it already is `category`.
    Category {
        from_id: i32,
        category: &'static str,
        alternative: &'static str,
    },
    /// Insert a product with the next free id.
    NewProduct {
        category: &'static str,
        price: Decimal,
    },
}

impl Change {
    pub fn kind(&self) -> ChangeKind {
        match self {
            Self::Price { .. } => ChangeKind::Price,
            Self::Category { .. } => ChangeKind::Category,
            Self::NewProduct { .. } => ChangeKind::NewProduct,
        }
    }
}

/// Picks a change at random. `ids` is the lowest and highest id in the table (`None` when it is
/// empty, in which case the change is a new product).
pub fn plan_change(rng: &mut impl Rng, ids: Option<(i32, i32)>) -> Change {
    let roll = rng.random_range(0..100);
    match ids {
        Some((low, high)) if low <= high && roll < PRICE_CHANGES_PERCENT => Change::Price {
            from_id: rng.random_range(low..=high),
            direction: if rng.random_bool(0.5) { 1 } else { -1 },
            // 0.1 % to 5 %, in basis points.
            fraction: Decimal::new(rng.random_range(10..=500), 4),
        },
        Some((low, high))
            if low <= high && roll < PRICE_CHANGES_PERCENT + CATEGORY_CHANGES_PERCENT =>
        {
            let mut pair = CATEGORIES.choose_multiple(rng, 2);
            let category = pair.next().copied().unwrap_or(CATEGORIES[0]);
            let alternative = pair.next().copied().unwrap_or(CATEGORIES[1]);
            Change::Category {
                from_id: rng.random_range(low..=high),
                category,
                alternative,
            }
        }
        _ => Change::NewProduct {
            category: CATEGORIES.choose(rng).copied().unwrap_or(CATEGORIES[0]),
            price: Decimal::new(rng.random_range(100..=10_000), 2),
        },
    }
}

/// The ids of the catalog as this process knows them, shared by the change workers: the lowest and
/// highest committed id (changes pick products between them) and the next id to hand out (only
/// ever grows, so two new products never get the same id from this process).
#[derive(Debug)]
pub struct CatalogIds {
    lowest: AtomicI32,
    highest: AtomicI32,
    next: AtomicI32,
}

impl CatalogIds {
    /// Reads the current lowest and highest id.
    pub async fn load(pool: &MySqlPool) -> Result<Self, sqlx::Error> {
        let ids = Self {
            lowest: AtomicI32::new(0),
            highest: AtomicI32::new(0),
            next: AtomicI32::new(1),
        };
        ids.reload(pool).await?;
        Ok(ids)
    }

    pub async fn reload(&self, pool: &MySqlPool) -> Result<(), sqlx::Error> {
        let (lowest, highest): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(MIN(id), 0) AS SIGNED), CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM product",
        )
        .fetch_one(pool)
        .await?;
        let lowest = i32::try_from(lowest).unwrap_or(0);
        let highest = i32::try_from(highest).unwrap_or(0);
        self.lowest.store(lowest, Ordering::Relaxed);
        self.highest.store(highest, Ordering::Relaxed);
        self.next
            .fetch_max(highest.saturating_add(1), Ordering::Relaxed);
        Ok(())
    }

    /// `(lowest, highest)` committed id, or `None` while the table is empty.
    pub fn range(&self) -> Option<(i32, i32)> {
        let lowest = self.lowest.load(Ordering::Relaxed);
        let highest = self.highest.load(Ordering::Relaxed);
        (highest > 0).then_some((lowest.max(1), highest))
    }

    /// Reserves the next id for a new product (`None` when ids are exhausted).
    fn reserve_id(&self) -> Option<i32> {
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                (next < i32::MAX).then_some(next + 1)
            })
            .ok()
    }

    /// Records that a product with `id` is committed, so changes may pick it.
    fn committed(&self, id: i32) {
        self.highest.fetch_max(id, Ordering::Relaxed);
        let _ = self
            .lowest
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |low| {
                (low == 0 || id < low).then_some(id)
            });
    }
}

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The change is committed.
    Changed(ChangeKind),
    /// Nothing to change: no product had an id at or above the one picked (rows were deleted
    /// behind our back; the known id range was re-read), or no id is left for a new product.
    NoSuchProduct,
}

/// Applies `change` as one autocommitted statement.
pub async fn apply_change(
    pool: &MySqlPool,
    ids: &CatalogIds,
    change: &Change,
) -> Result<Applied, sqlx::Error> {
    let affected = match change {
        Change::Price {
            from_id,
            direction,
            fraction,
        } => {
            sqlx::query(
                "UPDATE product SET price = IF(\
                     price + ? * GREATEST(0.01, ROUND(price * ?, 2)) BETWEEN 0.01 AND 99999999.99, \
                     price + ? * GREATEST(0.01, ROUND(price * ?, 2)), \
                     price - ? * GREATEST(0.01, ROUND(price * ?, 2))) \
                 WHERE id >= ? ORDER BY id LIMIT 1",
            )
            .bind(direction)
            .bind(fraction)
            .bind(direction)
            .bind(fraction)
            .bind(direction)
            .bind(fraction)
            .bind(from_id)
            .execute(pool)
            .await?
            .rows_affected()
        }
        Change::Category {
            from_id,
            category,
            alternative,
        } => {
            sqlx::query(
                "UPDATE product SET category = IF(category <=> ?, ?, ?) WHERE id >= ? ORDER BY id LIMIT 1",
            )
            .bind(category)
            .bind(alternative)
            .bind(category)
            .bind(from_id)
            .execute(pool)
            .await?
            .rows_affected()
        }
        Change::NewProduct { category, price } => {
            let Some(id) = ids.reserve_id() else {
                return Ok(Applied::NoSuchProduct);
            };
            let inserted = sqlx::query("INSERT INTO product (id, name, category, price) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(format!("Product_{id}"))
                .bind(category)
                .bind(price)
                .execute(pool)
                .await;
            match inserted {
                Ok(result) => {
                    ids.committed(id);
                    result.rows_affected()
                }
                Err(error) => {
                    if crate::database::is_duplicate_key(&error) {
                        // Someone else inserted that id: learn the real highest id before the next try.
                        let _ = ids.reload(pool).await;
                    }
                    return Err(error);
                }
            }
        }
    };
    if affected == 0 {
        ids.reload(pool).await?;
        Ok(Applied::NoSuchProduct)
    } else {
        Ok(Applied::Changed(change.kind()))
    }
}
