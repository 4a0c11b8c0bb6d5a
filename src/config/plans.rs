//! The plans on sale: `PLANS`, or the one plan of the three `PLAN_` settings.

use super::{invalid, parse, read, settings, ConfigError, Env};
use crate::domain::money::{Cents, Currency};

/// What a customer buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the storefront sends back to name it ([`parse::plan_id`] of the name).
    pub id: String,
    pub name: String,
    pub price: Cents,
    pub minutes_included: i64,
    pub overage_per_minute: Cents,
    pub currency: Currency,
}

/// The plans on sale, in the storefront's order: at least one, ids unique, one currency and
/// one overage price for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans(Vec<Plan>);

impl Plans {
    pub fn all(&self) -> &[Plan] {
        &self.0
    }

    /// The first plan: what a request naming none buys, and what operator codes and imports
    /// take their currency and overage price from.
    pub fn first(&self) -> &Plan {
        &self.0[0]
    }

    /// The plan the storefront names; `None` for one not on sale.
    pub fn find(&self, id: &str) -> Option<&Plan> {
        self.0.iter().find(|p| p.id == id)
    }

    pub fn currency(&self) -> &Currency {
        &self.first().currency
    }
}

/// The plans on sale, their prices read in their currency: `PLANS`, or the one plan of the
/// three `PLAN_` settings (not both); and the top-up packs, `TOP_UPS` or the plans themselves.
pub(super) fn from_env(env: &dyn Env) -> Result<(Plans, Plans), ConfigError> {
    let currency = settings::CURRENCY.value(env)?;
    let read_money = |var: &'static str, raw: &str| -> Result<Cents, ConfigError> {
        currency
            .parse_amount(raw)
            .map_err(|reason| invalid(var, format!("`{raw}`: {reason}")))
    };
    let overage_per_minute = read_money(
        settings::OVERAGE_PRICE_PER_MINUTE.var,
        &settings::OVERAGE_PRICE_PER_MINUTE.value(env)?,
    )?;
    let specs = match settings::PLANS.get(env)? {
        Some(specs) => {
            let single = [
                settings::PLAN_NAME.var,
                settings::PLAN_PRICE.var,
                settings::PLAN_MINUTES.var,
            ];
            if let Some(also) = single.into_iter().find(|var| read(env, var).is_some()) {
                return Err(invalid(
                    "PLANS",
                    format!("replaces {also}; set one or the other"),
                ));
            }
            specs
        }
        None => vec![parse::PlanSpec {
            name: settings::PLAN_NAME.value(env)?,
            minutes: settings::PLAN_MINUTES.value(env)?,
            price: settings::PLAN_PRICE.value(env)?,
        }],
    };
    let price_var = match read(env, settings::PLANS.var) {
        Some(_) => settings::PLANS.var,
        None => settings::PLAN_PRICE.var,
    };
    let plans = build(specs, price_var, &read_money, overage_per_minute, &currency)?;
    let top_ups = match settings::TOP_UPS.get(env)? {
        Some(specs) => build(
            specs,
            settings::TOP_UPS.var,
            &read_money,
            overage_per_minute,
            &currency,
        )?,
        None => plans.clone(),
    };
    Ok((plans, top_ups))
}

/// Plans from their specs, each price read in the currency and more than zero.
fn build(
    specs: Vec<parse::PlanSpec>,
    price_var: &'static str,
    read_money: &dyn Fn(&'static str, &str) -> Result<Cents, ConfigError>,
    overage_per_minute: Cents,
    currency: &Currency,
) -> Result<Plans, ConfigError> {
    let plans = specs
        .into_iter()
        .map(|spec| {
            let price = read_money(price_var, &spec.price)?;
            if price.0 <= 0 {
                return Err(invalid(
                    price_var,
                    format!("{}: must be more than zero", spec.name),
                ));
            }
            Ok(Plan {
                id: parse::plan_id(&spec.name),
                name: spec.name,
                price,
                minutes_included: spec.minutes,
                overage_per_minute,
                currency: currency.clone(),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(Plans(plans))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    #[test]
    fn plans_from_one_setting_or_the_three_old_ones() {
        let env = |vars: &[(&str, &str)]| -> HashMap<String, String> {
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let old = Config::from_env(&env(&[
            ("PLAN_NAME", "Talk time"),
            ("PLAN_PRICE", "7.50"),
            ("PLAN_MINUTES", "9"),
        ]))
        .unwrap();
        assert_eq!(old.plans.all().len(), 1);
        let plan = old.plans.first();
        assert_eq!(
            (plan.id.as_str(), plan.name.as_str()),
            ("talk-time", "Talk time")
        );
        assert_eq!((plan.price, plan.minutes_included), (Cents(750), 9));

        let cfg = Config::from_env(&env(&[
            (
                "PLANS",
                " Quick chat=5@5.00; Quarter  hour = 15 @ 12 ;Half hour=30@20.00;",
            ),
            ("CURRENCY", "eur"),
            ("OVERAGE_PRICE_PER_MINUTE", "0.90"),
        ]))
        .unwrap();
        let got: Vec<(&str, &str, i64, i64)> = cfg
            .plans
            .all()
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.name.as_str(),
                    p.price.0,
                    p.minutes_included,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("quick-chat", "Quick chat", 500, 5),
                ("quarter-hour", "Quarter  hour", 1200, 15),
                ("half-hour", "Half hour", 2000, 30),
            ]
        );
        assert!(cfg
            .plans
            .all()
            .iter()
            .all(|p| p.overage_per_minute == Cents(90) && p.currency.code() == "eur"));
        assert_eq!(
            cfg.plans.find("half-hour").map(|p| p.minutes_included),
            Some(30)
        );
        assert_eq!(cfg.plans.find("Half hour"), None, "by id only");
    }
}
