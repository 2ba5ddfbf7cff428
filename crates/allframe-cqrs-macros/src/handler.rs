//! `#[command_handler]`: a handler function becomes a handler type, registered for discovery.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, GenericArgument, ItemFn, LitStr, PathArguments, ReturnType, Type};

use crate::names;

/// What one parameter of a handler function is.
enum Param {
    /// `&T`: the aggregate's state or the command.
    Borrowed(Type),
    /// `&Context`.
    Context,
    /// `State<T>`.
    State(Type),
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) => path.path.segments.last(),
        _ => None,
    }
}

fn classify(arg: &FnArg) -> syn::Result<Param> {
    let FnArg::Typed(typed) = arg else {
        return Err(syn::Error::new_spanned(arg, "a command handler is a free function, not a method"));
    };
    match &*typed.ty {
        Type::Reference(reference) if reference.mutability.is_none() => {
            if last_segment(&reference.elem).is_some_and(|s| s.ident == "Context") {
                Ok(Param::Context)
            } else {
                Ok(Param::Borrowed((*reference.elem).clone()))
            }
        }
        ty => match last_segment(ty) {
            Some(segment) if segment.ident == "State" => match &segment.arguments {
                PathArguments::AngleBracketed(args) => match args.args.first() {
                    Some(GenericArgument::Type(inner)) => Ok(Param::State(inner.clone())),
                    _ => Err(syn::Error::new_spanned(ty, "State<T> names one type")),
                },
                _ => Err(syn::Error::new_spanned(ty, "State<T> names one type")),
            },
            _ => Err(syn::Error::new_spanned(
                ty,
                "a handler takes `&State` (the aggregate), `&Command`, `&Context` and `State<T>` parameters",
            )),
        },
    }
}

/// `T` in `Result<Vec<T>, E>`.
fn event_type(output: &ReturnType) -> syn::Result<Type> {
    let error = || syn::Error::new_spanned(output, "a handler returns Result<Vec<Event>, Command::Error>");
    let ReturnType::Type(_, ty) = output else { return Err(error()) };
    let first_arg = |ty: &Type| match last_segment(ty).map(|s| &s.arguments) {
        Some(PathArguments::AngleBracketed(args)) => match args.args.first() {
            Some(GenericArgument::Type(inner)) => Some(inner.clone()),
            _ => None,
        },
        _ => None,
    };
    let vec = first_arg(ty).ok_or_else(error)?;
    first_arg(&vec).ok_or_else(error)
}

pub fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut krate = names::default_crate();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            krate = names::parse_crate(&meta.value()?.parse::<LitStr>()?)?;
            Ok(())
        } else {
            Err(meta.error("expected `crate = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, args)?;
    let function: ItemFn = syn::parse2(item)?;
    if !function.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&function.sig.generics, "a command handler is not generic"));
    }
    let params = function.sig.inputs.iter().map(classify).collect::<syn::Result<Vec<_>>>()?;
    let borrowed: Vec<&Type> = params
        .iter()
        .filter_map(|p| match p {
            Param::Borrowed(ty) => Some(ty),
            _ => None,
        })
        .collect();
    let states: Vec<&Type> = params
        .iter()
        .filter_map(|p| match p {
            Param::State(ty) => Some(ty),
            _ => None,
        })
        .collect();
    let call_args: Vec<TokenStream> = {
        let mut next_borrowed = 0;
        params
            .iter()
            .map(|param| match param {
                Param::Borrowed(_) => {
                    next_borrowed += 1;
                    if borrowed.len() == 2 && next_borrowed == 1 { quote!(state) } else { quote!(command) }
                }
                Param::Context => quote!(ctx),
                Param::State(ty) => quote! {
                    ctx.state::<#ty>().expect("CommandBusBuilder::build checked that every State<T> was given")
                },
            })
            .collect()
    };
    let name = &function.sig.ident;
    let vis = &function.vis;
    let handler = format_ident!("{}Handler", names::camel_case(&name.to_string()));
    let call = if function.sig.asyncness.is_some() {
        quote!(#name(#(#call_args),*).await)
    } else {
        quote!(#name(#(#call_args),*))
    };
    let required = quote! {
        fn required_state() -> ::std::vec::Vec<(::std::any::TypeId, &'static str)> {
            ::std::vec![#((::std::any::TypeId::of::<#states>(), ::std::any::type_name::<#states>())),*]
        }
    };
    let output = &function.sig.output;
    let (implementation, register) = match borrowed.as_slice() {
        [aggregate, command] => (
            quote! {
                #[#krate::__private::async_trait]
                impl #krate::AggregateHandler<#command> for #handler {
                    type Aggregate = #aggregate;
                    #required
                    async fn handle(&self, state: &#aggregate, command: &#command, ctx: &#krate::Context) #output {
                        #call
                    }
                }
            },
            quote!(builder.aggregate::<#command, _>(#handler)),
        ),
        [command] => {
            let event = event_type(output)?;
            (
                quote! {
                    #[#krate::__private::async_trait]
                    impl #krate::Handler<#command> for #handler {
                        type Event = #event;
                        #required
                        async fn handle(&self, command: &#command, ctx: &#krate::Context) #output {
                            #call
                        }
                    }
                },
                quote!(builder.handler::<#command, _>(#handler)),
            )
        }
        _ => {
            return Err(syn::Error::new_spanned(
                &function.sig.inputs,
                "a handler takes `&Aggregate, &Command` (an aggregate handler) or `&Command` (a plain handler), \
                 plus `&Context` and `State<T>` parameters",
            ));
        }
    };
    let doc = format!("The handler written by [`{name}`], registered for `CommandBusBuilder::discover`.");
    let registration = LitStr::new(&name.to_string(), name.span());
    Ok(quote! {
        #function

        #[doc = #doc]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #handler;

        #implementation

        #krate::__private::inventory::submit! {
            #krate::__private::Registration {
                name: ::std::concat!(::std::module_path!(), "::", #registration),
                register: |builder| #register,
            }
        }
    })
}
