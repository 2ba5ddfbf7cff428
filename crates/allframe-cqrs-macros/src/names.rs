//! Names as serde gives them (its `rename` and `rename_all` rules, for enum variants), and the
//! crate path the expansions use.

use syn::{Attribute, LitStr, Path};

/// The default path of the module the expansions name.
pub fn default_crate() -> Path {
    syn::parse_quote!(::allframe::cqrs)
}

/// A `crate = "path"` argument.
pub fn parse_crate(value: &LitStr) -> syn::Result<Path> {
    value.parse()
}

/// serde's `rename = "..."` (or `rename(serialize = "...")`) among `attrs`.
pub fn serde_rename(attrs: &[Attribute]) -> syn::Result<Option<String>> {
    serde_value(attrs, "rename")
}

/// serde's `rename_all = "..."` (or `rename_all(serialize = "...")`) among `attrs`.
pub fn serde_rename_all(attrs: &[Attribute]) -> syn::Result<Option<String>> {
    serde_value(attrs, "rename_all")
}

fn serde_value(attrs: &[Attribute], key: &str) -> syn::Result<Option<String>> {
    let mut found = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(key) {
                if meta.input.peek(syn::Token![=]) {
                    found = Some(meta.value()?.parse::<LitStr>()?.value());
                } else {
                    meta.parse_nested_meta(|inner| {
                        let value = inner.value()?.parse::<LitStr>()?.value();
                        if inner.path.is_ident("serialize") {
                            found = Some(value);
                        }
                        Ok(())
                    })?;
                }
            } else if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let _content;
                syn::parenthesized!(_content in meta.input);
                let _: proc_macro2::TokenStream = _content.parse()?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// A variant's name under serde's `rename_all` rule (serde's own conversions, for variants).
pub fn apply_rename_all(rule: &str, variant: &str) -> syn::Result<String> {
    let snake = || {
        let mut out = String::new();
        for (i, ch) in variant.char_indices() {
            if i > 0 && ch.is_uppercase() {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        }
        out
    };
    Ok(match rule {
        "lowercase" => variant.to_ascii_lowercase(),
        "UPPERCASE" => variant.to_ascii_uppercase(),
        "PascalCase" => variant.to_owned(),
        "camelCase" => variant[..1].to_ascii_lowercase() + &variant[1..],
        "snake_case" => snake(),
        "SCREAMING_SNAKE_CASE" => snake().to_ascii_uppercase(),
        "kebab-case" => snake().replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => snake().to_ascii_uppercase().replace('_', "-"),
        other => {
            return Err(syn::Error::new(
                proc_macro2::Span::call_site(),
                format!("unknown serde rename_all rule `{other}`"),
            ));
        }
    })
}

/// `deposit_money` → `DepositMoney`.
pub fn camel_case(snake: &str) -> String {
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_all_follows_serde() {
        assert_eq!(apply_rename_all("snake_case", "MoneyDeposited").unwrap(), "money_deposited");
        assert_eq!(apply_rename_all("kebab-case", "MoneyDeposited").unwrap(), "money-deposited");
        assert_eq!(apply_rename_all("SCREAMING_SNAKE_CASE", "Opened").unwrap(), "OPENED");
        assert_eq!(apply_rename_all("camelCase", "MoneyDeposited").unwrap(), "moneyDeposited");
        assert_eq!(apply_rename_all("lowercase", "MoneyDeposited").unwrap(), "moneydeposited");
        assert!(apply_rename_all("Title Case", "A").is_err());
        assert_eq!(camel_case("deposit_money"), "DepositMoney");
    }
}
