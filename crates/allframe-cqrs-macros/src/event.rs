//! `#[derive(Event)]`: each variant's stored name, the list of them, the schema version.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitInt, LitStr};

use crate::names;

/// The container's `#[event(...)]` arguments.
struct ContainerArgs {
    krate: syn::Path,
    version: Option<LitInt>,
    name: Option<String>,
}

fn container_args(input: &DeriveInput) -> syn::Result<ContainerArgs> {
    let mut args = ContainerArgs { krate: names::default_crate(), version: None, name: None };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                args.krate = names::parse_crate(&meta.value()?.parse::<LitStr>()?)?;
            } else if meta.path.is_ident("version") {
                let version: LitInt = meta.value()?.parse()?;
                if version.base10_parse::<u32>()? == 0 {
                    return Err(meta.error("schema versions start at 1"));
                }
                args.version = Some(version);
            } else if meta.path.is_ident("name") {
                args.name = Some(meta.value()?.parse::<LitStr>()?.value());
            } else {
                return Err(meta.error("expected `crate = \"...\"`, `version = N` or `name = \"...\"`"));
            }
            Ok(())
        })?;
    }
    Ok(args)
}

/// A variant's `#[event(name = "...")]`.
fn variant_name(attrs: &[syn::Attribute]) -> syn::Result<Option<String>> {
    let mut name = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse::<LitStr>()?.value());
                Ok(())
            } else {
                Err(meta.error("expected `name = \"...\"` on a variant"))
            }
        })?;
    }
    Ok(name)
}

pub fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let args = container_args(&input)?;
    let ident = &input.ident;
    let krate = &args.krate;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let (event_type, names): (TokenStream, Vec<String>) = match &input.data {
        Data::Enum(data) => {
            if args.name.is_some() {
                return Err(syn::Error::new_spanned(ident, "name variants with #[event(name = \"...\")] on each"));
            }
            let rule = names::serde_rename_all(&input.attrs)?;
            let mut arms = Vec::new();
            let mut names = Vec::new();
            for variant in &data.variants {
                let name = match (variant_name(&variant.attrs)?, names::serde_rename(&variant.attrs)?, &rule) {
                    (Some(name), _, _) | (None, Some(name), _) => name,
                    (None, None, Some(rule)) => names::apply_rename_all(rule, &variant.ident.to_string())
                        .map_err(|e| syn::Error::new_spanned(&variant.ident, e.to_string()))?,
                    (None, None, None) => variant.ident.to_string(),
                };
                if names.contains(&name) {
                    return Err(syn::Error::new_spanned(&variant.ident, format!("two variants are named `{name}`")));
                }
                let variant_ident = &variant.ident;
                let pattern = match &variant.fields {
                    Fields::Named(_) => quote!(Self::#variant_ident { .. }),
                    Fields::Unnamed(_) => quote!(Self::#variant_ident(..)),
                    Fields::Unit => quote!(Self::#variant_ident),
                };
                arms.push(quote!(#pattern => #name,));
                names.push(name);
            }
            if arms.is_empty() {
                return Err(syn::Error::new_spanned(ident, "an event enum needs at least one variant"));
            }
            (quote!(match self { #(#arms)* }), names)
        }
        Data::Struct(_) => {
            let name = match (args.name.clone(), names::serde_rename(&input.attrs)?) {
                (Some(name), _) | (None, Some(name)) => name,
                (None, None) => ident.to_string(),
            };
            (quote!(#name), vec![name])
        }
        Data::Union(_) => return Err(syn::Error::new_spanned(ident, "an event is an enum or a struct")),
    };
    let version = args.version.map(|version| quote!(const SCHEMA_VERSION: u32 = #version;));
    Ok(quote! {
        impl #impl_generics #krate::Event for #ident #type_generics #where_clause {
            fn event_type(&self) -> &'static str {
                #event_type
            }
            const EVENT_TYPES: &'static [&'static str] = &[#(#names),*];
            #version
        }
    })
}
