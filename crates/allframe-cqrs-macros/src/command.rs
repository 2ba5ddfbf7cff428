//! `#[command(...)]`: a struct's `Command` impl.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Fields, ItemStruct, LitStr, Type};

use crate::names;

struct Args {
    krate: syn::Path,
    name: Option<String>,
    stream: Option<LitStr>,
    error: Option<Type>,
    validate: bool,
    schema: bool,
}

fn parse_args(args: TokenStream) -> syn::Result<Args> {
    let mut parsed =
        Args { krate: names::default_crate(), name: None, stream: None, error: None, validate: false, schema: false };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            parsed.krate = names::parse_crate(&meta.value()?.parse::<LitStr>()?)?;
        } else if meta.path.is_ident("name") {
            parsed.name = Some(meta.value()?.parse::<LitStr>()?.value());
        } else if meta.path.is_ident("stream") {
            parsed.stream = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("error") {
            parsed.error = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("validate") {
            parsed.validate = true;
        } else if meta.path.is_ident("schema") {
            parsed.schema = true;
        } else {
            return Err(meta.error(
                "expected `name = \"...\"`, `stream = \"...\"`, `error = Type`, `validate`, `schema` or `crate = \"...\"`",
            ));
        }
        Ok(())
    });
    syn::parse::Parser::parse2(parser, args)?;
    Ok(parsed)
}

/// `"account-{id}"` as `format!("account-{}", self.id)`.
fn stream_format(format: &LitStr, item: &ItemStruct) -> syn::Result<TokenStream> {
    let text = format.value();
    let mut literal = String::new();
    let mut fields = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let close =
            rest[open..].find('}').ok_or_else(|| syn::Error::new_spanned(format, "unclosed `{` in the stream"))?;
        let field = &rest[open + 1..open + close];
        let known = match &item.fields {
            Fields::Named(named) => named.named.iter().any(|f| f.ident.as_ref().is_some_and(|i| i == field)),
            _ => false,
        };
        if !known {
            return Err(syn::Error::new_spanned(format, format!("`{{{field}}}`: the struct has no field `{field}`")));
        }
        literal.push_str("{}");
        fields.push(syn::Ident::new(field, format.span()));
        rest = &rest[open + close + 1..];
    }
    literal.push_str(rest);
    Ok(quote!(::std::format!(#literal, #(self.#fields),*)))
}

pub fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse_args(args)?;
    let mut item: ItemStruct = syn::parse2(item)
        .map_err(|e| syn::Error::new(e.span(), "#[command] goes on a struct (place it before #[derive(...)])"))?;
    let mut stream_field = None;
    for field in item.fields.iter_mut() {
        let before = field.attrs.len();
        field.attrs.retain(|attr| !attr.path().is_ident("command"));
        if field.attrs.len() != before {
            let ident =
                field.ident.clone().ok_or_else(|| syn::Error::new_spanned(&*field, "a stream field needs a name"))?;
            if stream_field.replace(ident).is_some() {
                return Err(syn::Error::new_spanned(&*field, "only one field is the stream"));
            }
        }
    }
    let stream = match (&args.stream, stream_field) {
        (Some(format), None) => stream_format(format, &item)?,
        (None, Some(field)) => quote!(::std::string::ToString::to_string(&self.#field)),
        (Some(format), Some(_)) => {
            return Err(syn::Error::new_spanned(
                format,
                "name the stream once: `stream = ...` or a #[command(stream)] field",
            ));
        }
        (None, None) => {
            return Err(syn::Error::new_spanned(
                &item.ident,
                "name the command's stream: #[command(stream = \"account-{id}\")] or mark a field #[command(stream)]",
            ));
        }
    };
    let ident = &item.ident;
    let krate = &args.krate;
    let name = args.name.unwrap_or_else(|| ident.to_string());
    let error = args.error.map(|error| quote!(#error)).unwrap_or_else(|| quote!(#krate::NoError));
    let validate = args.validate.then(|| {
        quote! {
            fn validate(&self) -> ::std::result::Result<(), #krate::ValidationErrors> {
                #krate::__private::garde::Validate::validate(self).map_err(::std::convert::Into::into)
            }
        }
    });
    let schema = args.schema.then(|| {
        quote! {
            fn json_schema() -> ::std::option::Option<#krate::__private::serde_json::Value> {
                #krate::__private::schema_of::<Self>()
            }
        }
    });
    let (impl_generics, type_generics, where_clause) = item.generics.split_for_impl();
    Ok(quote! {
        #item

        impl #impl_generics #krate::Command for #ident #type_generics #where_clause {
            const NAME: &'static str = #name;
            type Error = #error;
            fn stream_id(&self) -> ::std::string::String {
                #stream
            }
            #validate
            #schema
        }
    })
}
