//! Frappe's `money_in_words` (`in_words`, `base_in_words`): `USD Eight Hundred And Fifty only.`
//!
//! Frappe spells the integer part with `num2words(lang="en")`, replaces hyphens with spaces and
//! title-cases it; cents follow as `and <words> Cent`.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// num2words' English cardinal (`1234` → `one thousand, two hundred and thirty-four`).
fn cardinal(n: u64) -> String {
    match n {
        0..=19 => ONES[n as usize].to_string(),
        20..=99 => {
            let rest = n % 10;
            if rest == 0 {
                TENS[(n / 10) as usize].to_string()
            } else {
                format!("{}-{}", TENS[(n / 10) as usize], ONES[rest as usize])
            }
        }
        100..=999 => {
            let rest = n % 100;
            let head = format!("{} hundred", ONES[(n / 100) as usize]);
            if rest == 0 {
                head
            } else {
                format!("{head} and {}", cardinal(rest))
            }
        }
        _ => {
            let (scale, word) = [
                (1_000_000_000_000u64, "trillion"),
                (1_000_000_000, "billion"),
                (1_000_000, "million"),
                (1_000, "thousand"),
            ]
            .into_iter()
            .find(|(s, _)| n >= *s)
            .unwrap_or((1_000, "thousand"));
            let head = format!("{} {word}", cardinal(n / scale));
            match n % scale {
                0 => head,
                rest if rest < 100 => format!("{head} and {}", cardinal(rest)),
                rest => format!("{head}, {}", cardinal(rest)),
            }
        }
    }
}

fn title(s: &str) -> String {
    s.replace('-', " ")
        .split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `money_in_words(amount, currency)` with the currency's fraction unit `Cent`.
pub fn money_in_words(amount: f64, currency: &str) -> String {
    let cents_total = (amount.abs() * 100.0).round() as u64;
    let (main, fraction) = (cents_total / 100, cents_total % 100);
    let out = if main == 0 && fraction == 0 {
        format!("{currency} Zero")
    } else if main == 0 {
        format!("{} Cent", title(&cardinal(fraction)))
    } else if fraction > 0 {
        format!(
            "{currency} {} and {} Cent",
            title(&cardinal(main)),
            title(&cardinal(fraction))
        )
    } else {
        format!("{currency} {}", title(&cardinal(main)))
    };
    format!("{out} only.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_captured_amounts() {
        assert_eq!(
            money_in_words(850.0, "USD"),
            "USD Eight Hundred And Fifty only."
        );
        assert_eq!(
            money_in_words(120.0, "USD"),
            "USD One Hundred And Twenty only."
        );
        assert_eq!(
            money_in_words(1234.5, "USD"),
            "USD One Thousand, Two Hundred And Thirty Four and Fifty Cent only."
        );
        assert_eq!(
            money_in_words(1050.0, "USD"),
            "USD One Thousand And Fifty only."
        );
    }
}
