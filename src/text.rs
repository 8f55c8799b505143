//! Text normalisation and word error rate, for tests and evaluation.
//!
//! Normalisation: lower case, "%" read as "percent", whole numbers spelled
//! out ("10" -> "ten"), hyphens split words, other punctuation dropped
//! (apostrophes kept inside words: "you'll"), "mr"/"mrs"/"dr" spelled out.

/// The normalised words of `text`.
pub fn normalize_words(text: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '%' => spaced.push_str(" percent "),
            '-' | '\u{2013}' | '\u{2014}' | '/' => spaced.push(' '),
            '\u{2019}' => spaced.push('\''),
            _ => spaced.extend(c.to_lowercase()),
        }
    }
    let mut words = Vec::new();
    for raw in spaced.split_whitespace() {
        let w: String = raw
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .collect();
        let w = w.trim_matches('\'').to_string();
        if w.is_empty() {
            continue;
        }
        // "1,000" loses its comma above; plain digit runs become words
        if w.chars().all(|c| c.is_ascii_digit()) {
            if let Ok(n) = w.parse::<u64>() {
                if n < 1_000_000 {
                    words.extend(number_words(n));
                    continue;
                }
            }
        }
        words.push(match w.as_str() {
            "mr" => "mister".to_string(),
            "mrs" => "missus".to_string(),
            "dr" => "doctor".to_string(),
            _ => w,
        });
    }
    words
}

fn number_words(n: u64) -> Vec<String> {
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
    fn below_thousand(n: u64, out: &mut Vec<String>) {
        if n >= 100 {
            out.push(ONES[(n / 100) as usize].into());
            out.push("hundred".into());
        }
        let r = n % 100;
        if r >= 20 {
            out.push(TENS[(r / 10) as usize].into());
            if r % 10 != 0 {
                out.push(ONES[(r % 10) as usize].into());
            }
        } else if r > 0 || n == 0 {
            out.push(ONES[r as usize].into());
        }
    }
    let mut out = Vec::new();
    if n >= 1000 {
        below_thousand(n / 1000, &mut out);
        out.push("thousand".into());
        if n % 1000 != 0 {
            below_thousand(n % 1000, &mut out);
        }
    } else {
        below_thousand(n, &mut out);
    }
    out
}

/// Word-level edit counts of a hypothesis against a reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WordErrors {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    pub reference_words: usize,
}

impl WordErrors {
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Word error rate; 0 for an empty reference with an empty hypothesis.
    pub fn wer(&self) -> f64 {
        if self.reference_words == 0 {
            return if self.insertions == 0 { 0.0 } else { 1.0 };
        }
        self.errors() as f64 / self.reference_words as f64
    }

    pub fn add(&mut self, other: WordErrors) {
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
        self.reference_words += other.reference_words;
    }
}

/// Minimum edit alignment of normalised words (Levenshtein).
pub fn word_errors(reference: &str, hypothesis: &str) -> WordErrors {
    let r = normalize_words(reference);
    let h = normalize_words(hypothesis);
    // cost table with (cost, subs, dels, ins) kept along the best path
    let mut prev: Vec<(usize, usize, usize, usize)> = (0..=h.len()).map(|j| (j, 0, 0, j)).collect();
    for i in 1..=r.len() {
        let mut cur = vec![(i, 0, i, 0); h.len() + 1];
        for j in 1..=h.len() {
            let diag = prev[j - 1];
            let sub = if r[i - 1] == h[j - 1] {
                diag
            } else {
                (diag.0 + 1, diag.1 + 1, diag.2, diag.3)
            };
            let del = (prev[j].0 + 1, prev[j].1, prev[j].2 + 1, prev[j].3);
            let ins = (
                cur[j - 1].0 + 1,
                cur[j - 1].1,
                cur[j - 1].2,
                cur[j - 1].3 + 1,
            );
            cur[j] = [sub, del, ins].into_iter().min_by_key(|c| c.0).unwrap();
        }
        prev = cur;
    }
    let (_, s, d, ins) = prev[h.len()];
    WordErrors {
        substitutions: s,
        deletions: d,
        insertions: ins,
        reference_words: r.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize_words("Hello, World!"), vec!["hello", "world"]);
        assert_eq!(
            normalize_words("about 10%."),
            vec!["about", "ten", "percent"]
        );
        assert_eq!(
            normalize_words("about ten percent"),
            vec!["about", "ten", "percent"]
        );
        assert_eq!(
            normalize_words("You'll see speech-to-text"),
            vec!["you'll", "see", "speech", "to", "text"]
        );
        assert_eq!(
            normalize_words("It’s 2,024"),
            vec!["it's", "two", "thousand", "twenty", "four"]
        );
        assert_eq!(normalize_words("Mr. Quilter"), vec!["mister", "quilter"]);
    }

    #[test]
    fn wer_counts_edits() {
        let e = word_errors("the cat sat on the mat", "the cat sat on mat");
        assert_eq!(
            (
                e.deletions,
                e.substitutions,
                e.insertions,
                e.reference_words
            ),
            (1, 0, 0, 6)
        );
        let e = word_errors("a b c", "a x c d");
        assert_eq!((e.substitutions, e.insertions, e.deletions), (1, 1, 0));
        assert!((e.wer() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(word_errors("Ask not.", "ask NOT").wer(), 0.0);
        assert_eq!(word_errors("", "").wer(), 0.0);
    }
}
