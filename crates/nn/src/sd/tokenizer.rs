//! A word-level tokenizer shipped with the model (`vocab.txt`, one token a line, the line number is
//! the id), padded and truncated as CLIP's is: `<|startoftext|> words... <|endoftext|>`, then
//! `<|endoftext|>` up to the fixed length. Words not in the vocabulary become `<|unk|>`.

use crate::{Error, Result};

pub const START: &str = "<|startoftext|>";
pub const END: &str = "<|endoftext|>";
pub const UNKNOWN: &str = "<|unk|>";

#[derive(Clone, Debug)]
pub struct WordTokenizer {
    words: Vec<String>,
    ids: std::collections::HashMap<String, u32>,
    max_len: usize,
    start: u32,
    end: u32,
    unknown: u32,
}

impl WordTokenizer {
    /// Builds a tokenizer from vocabulary lines; the three special tokens must be present.
    pub fn new(words: Vec<String>, max_len: usize) -> Result<Self> {
        if max_len < 2 {
            return Err(Error::Config(format!(
                "tokenizer: max length {max_len} leaves no room for start and end tokens"
            )));
        }
        let mut ids = std::collections::HashMap::new();
        for (i, w) in words.iter().enumerate() {
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                return Err(Error::Config(format!(
                    "tokenizer: vocabulary line {} (`{w}`) is empty or has whitespace",
                    i + 1
                )));
            }
            if ids.insert(w.clone(), i as u32).is_some() {
                return Err(Error::Config(format!("tokenizer: `{w}` appears twice")));
            }
        }
        let special = |s: &str| {
            ids.get(s)
                .copied()
                .ok_or_else(|| Error::Config(format!("tokenizer: vocabulary lacks `{s}`")))
        };
        Ok(WordTokenizer {
            start: special(START)?,
            end: special(END)?,
            unknown: special(UNKNOWN)?,
            words,
            ids,
            max_len,
        })
    }

    pub fn from_file(path: &std::path::Path, max_len: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let words = text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty());
        Self::new(words.collect(), max_len).map_err(|e| Error::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    }

    /// The vocabulary, in id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    pub fn vocab_size(&self) -> usize {
        self.words.len()
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Exactly `max_len` ids: start, the prompt's words (lower-cased, split at anything that is
    /// not a letter or digit, truncated to fit), end, end-padding.
    pub fn encode(&self, prompt: &str) -> Vec<u32> {
        let mut out = vec![self.start];
        let lower = prompt.to_lowercase();
        let words = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty());
        for w in words.take(self.max_len - 2) {
            out.push(*self.ids.get(w).unwrap_or(&self.unknown));
        }
        out.resize(self.max_len, self.end);
        out
    }

    /// The words of ids, for messages and tests.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter_map(|&i| self.words.get(i as usize))
            .filter(|w| w.as_str() != END && w.as_str() != START)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Prompt templates over a digit: `{w}` is the word ("seven"), `{d}` the numeral ("7").
pub const TEMPLATES: [&str; 12] = [
    "{w}",
    "{d}",
    "the number {w}",
    "the number {d}",
    "a handwritten {d}",
    "a handwritten {w}",
    "the digit {w}",
    "digit {d}",
    "a {w}",
    "an image of a {w}",
    "a drawing of the number {d}",
    "a handwritten digit {w}",
];

pub const DIGIT_WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Template `t` (mod the number of templates) filled in with `digit`.
pub fn prompt_for(digit: usize, t: usize) -> String {
    TEMPLATES[t % TEMPLATES.len()]
        .replace("{w}", DIGIT_WORDS[digit % 10])
        .replace("{d}", &(digit % 10).to_string())
}

/// The vocabulary the templates need, specials first (what `models/mnist-sd/vocab.txt` holds).
pub fn template_vocabulary() -> Vec<String> {
    let mut words: Vec<String> = vec![START.into(), END.into(), UNKNOWN.into()];
    for t in 0..TEMPLATES.len() {
        for d in 0..10 {
            for w in prompt_for(d, t).split(' ') {
                if !words.iter().any(|x| x == w) {
                    words.push(w.to_string());
                }
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> WordTokenizer {
        WordTokenizer::new(template_vocabulary(), 8).unwrap()
    }

    #[test]
    fn pads_like_clip_and_maps_unknown_words() {
        let t = tok();
        let ids = t.encode("A handwritten SEVEN!");
        assert_eq!(ids.len(), 8);
        assert_eq!(ids[0], 0);
        assert_eq!(t.decode(&ids), "a handwritten seven");
        assert!(ids[4..].iter().all(|&i| i == 1));
        let unk = t.encode("a purple seven");
        assert_eq!(t.decode(&unk), format!("a {UNKNOWN} seven"));
        // The empty prompt (classifier-free guidance's unconditional branch) is start + end padding.
        assert_eq!(t.encode(""), vec![0, 1, 1, 1, 1, 1, 1, 1]);
        // Too long: truncated, still ends with the end token.
        let long = t.encode("one two three four five six seven eight nine");
        assert_eq!(long.len(), 8);
        assert_eq!(long[7], 1);
    }

    #[test]
    fn every_template_fits_and_is_known() {
        let t = tok();
        for tpl in 0..TEMPLATES.len() {
            for d in 0..10 {
                let p = prompt_for(d, tpl);
                let ids = t.encode(&p);
                assert_eq!(t.decode(&ids), p, "template {tpl} digit {d}");
            }
        }
    }

    #[test]
    fn rejects_a_vocabulary_without_specials() {
        let err = WordTokenizer::new(vec!["a".into(), "b".into()], 8).unwrap_err();
        assert!(err.to_string().contains(START), "{err}");
    }
}
