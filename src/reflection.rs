//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) answered from
//! the embedded descriptor set.
//!
//! tonic-reflection's service ends the whole stream with an error status on
//! the first unknown symbol or file, and it does not answer extension
//! queries. The protocol says a failed lookup is an `error_response` on the
//! same stream, which clients such as grpcurl rely on when they probe for
//! symbols. So this module keeps tonic-reflection's generated types but
//! answers every request itself, from a `prost_reflect::DescriptorPool`: a
//! failed lookup is an `ErrorResponse` with `NOT_FOUND`, and the stream stays
//! open. Files are returned with their transitive imports, extension options
//! included.

use std::{pin::Pin, sync::Arc};

use prost::Message;
use prost_reflect::{DescriptorError, DescriptorPool, FileDescriptor};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};
use v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse, ServerReflectionRequest,
    ServerReflectionResponse, ServiceResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

/// The reflection service over a set of descriptors, for both protocol versions.
#[derive(Clone)]
pub struct Reflection {
    pool: Arc<DescriptorPool>,
}

/// The answer stream of one reflection call.
type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Reflection {
    /// Reflection over the given encoded `FileDescriptorSet`s (the reflection
    /// protocol's own descriptors are added, so it describes itself too).
    pub fn new(sets: &[&[u8]]) -> Result<Reflection, DescriptorError> {
        let mut pool = DescriptorPool::new();
        for set in sets.iter().chain([&v1::FILE_DESCRIPTOR_SET, &v1alpha::FILE_DESCRIPTOR_SET]) {
            pool.decode_file_descriptor_set(*set)?;
        }
        Ok(Reflection { pool: Arc::new(pool) })
    }

    /// The `grpc.reflection.v1.ServerReflection` service.
    pub fn v1(&self) -> v1::server_reflection_server::ServerReflectionServer<Reflection> {
        v1::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    /// The `grpc.reflection.v1alpha.ServerReflection` service (grpcurl before 1.8.8 and older clients).
    pub fn v1alpha(&self) -> v1alpha::server_reflection_server::ServerReflectionServer<Reflection> {
        v1alpha::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    /// The answer to one request; a failed lookup is an error response, never a stream error.
    pub fn answer(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let message_response = match &request.message_request {
            None => error(tonic::Code::InvalidArgument, "the request names no query".to_owned()),
            Some(query) => self.lookup(query).unwrap_or_else(|message| error(tonic::Code::NotFound, message)),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message_response),
        }
    }

    fn lookup(&self, query: &MessageRequest) -> Result<MessageResponse, String> {
        let pool = &self.pool;
        match query {
            MessageRequest::ListServices(_) => Ok(MessageResponse::ListServicesResponse(ListServiceResponse {
                service: pool.services().map(|s| ServiceResponse { name: s.full_name().to_owned() }).collect(),
            })),
            MessageRequest::FileByFilename(name) => {
                pool.get_file_by_name(name).map(files).ok_or_else(|| format!("file not found: {name}"))
            }
            MessageRequest::FileContainingSymbol(symbol) => {
                self.file_of_symbol(symbol).map(files).ok_or_else(|| format!("symbol not found: {symbol}"))
            }
            MessageRequest::FileContainingExtension(request) => pool
                .get_message_by_name(&request.containing_type)
                .and_then(|message| message.extensions().find(|e| e.number() as i32 == request.extension_number))
                .map(|extension| files(extension.parent_file()))
                .ok_or_else(|| {
                    format!("extension not found: {} of {}", request.extension_number, request.containing_type)
                }),
            MessageRequest::AllExtensionNumbersOfType(name) => pool
                .get_message_by_name(name)
                .map(|message| {
                    MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                        base_type_name: name.clone(),
                        extension_number: message.extensions().map(|e| e.number() as i32).collect(),
                    })
                })
                .ok_or_else(|| format!("type not found: {name}")),
        }
    }

    /// The file defining a fully-qualified symbol: a message, enum,
    /// service, method, extension, field or enum value.
    fn file_of_symbol(&self, symbol: &str) -> Option<FileDescriptor> {
        let pool = &self.pool;
        let symbol = symbol.strip_prefix('.').unwrap_or(symbol);
        if let Some(found) = pool
            .get_message_by_name(symbol)
            .map(|m| m.parent_file())
            .or_else(|| pool.get_enum_by_name(symbol).map(|e| e.parent_file()))
            .or_else(|| pool.get_service_by_name(symbol).map(|s| s.parent_file()))
            .or_else(|| pool.get_extension_by_name(symbol).map(|e| e.parent_file()))
        {
            return Some(found);
        }
        // A member: method of a service, field of a message, value of an enum.
        let (parent, member) = symbol.rsplit_once('.')?;
        if let Some(service) = pool.get_service_by_name(parent) {
            return service.methods().any(|m| m.name() == member).then(|| service.parent_file());
        }
        if let Some(message) = pool.get_message_by_name(parent) {
            return message.get_field_by_name(member).map(|_| message.parent_file());
        }
        let enumeration = pool.get_enum_by_name(parent)?;
        enumeration.get_value_by_name(member).map(|_| enumeration.parent_file())
    }
}

/// A file and its transitive imports, the file first, each encoded with its
/// extension options.
fn files(file: FileDescriptor) -> MessageResponse {
    let mut seen = vec![file.name().to_owned()];
    let mut order = vec![file];
    let mut next = 0;
    while next < order.len() {
        let dependencies: Vec<FileDescriptor> = order[next].dependencies().collect();
        for dependency in dependencies {
            if !seen.iter().any(|name| name == dependency.name()) {
                seen.push(dependency.name().to_owned());
                order.push(dependency);
            }
        }
        next += 1;
    }
    MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
        file_descriptor_proto: order.iter().map(FileDescriptor::encode_to_vec).collect(),
    })
}

fn error(code: tonic::Code, error_message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse { error_code: code as i32, error_message })
}

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let this = self.clone();
        let answers = request.into_inner().map(move |request| request.map(|r| this.answer(r)));
        Ok(Response::new(Box::pin(answers)))
    }
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let this = self.clone();
        // v1alpha is v1 under another package name: the same messages on the wire.
        let answers = request.into_inner().map(move |request| {
            let request = ServerReflectionRequest::decode(request?.encode_to_vec().as_slice())
                .map_err(|_| Status::invalid_argument("malformed reflection request"))?;
            v1alpha::ServerReflectionResponse::decode(this.answer(request).encode_to_vec().as_slice())
                .map_err(|_| Status::internal("reflection response re-encoding failed"))
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reflection() -> Reflection {
        Reflection::new(&[crate::proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET]).unwrap()
    }

    fn ask(query: MessageRequest) -> MessageResponse {
        let request = ServerReflectionRequest { host: String::new(), message_request: Some(query) };
        reflection().answer(request).message_response.unwrap()
    }

    #[test]
    fn an_unknown_symbol_is_an_error_response_not_found() {
        let MessageResponse::ErrorResponse(error) = ask(MessageRequest::FileContainingSymbol("no.such.Thing".into()))
        else {
            panic!("expected an error response");
        };
        assert_eq!(error.error_code, tonic::Code::NotFound as i32);
        assert!(error.error_message.contains("no.such.Thing"));
    }

    #[test]
    fn a_method_symbol_finds_its_file_with_imports_first_the_file() {
        let MessageResponse::FileDescriptorResponse(found) =
            ask(MessageRequest::FileContainingSymbol("tenantry.v1.JobsService.EnqueueJob".into()))
        else {
            panic!("expected files");
        };
        let first = prost_types::FileDescriptorProto::decode(found.file_descriptor_proto[0].as_slice()).unwrap();
        assert_eq!(first.name(), "tenantry/v1/jobs_service.proto");
        let names: Vec<String> = found
            .file_descriptor_proto
            .iter()
            .map(|raw| prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap().name().to_owned())
            .collect();
        assert!(names.contains(&"tenantry/v1/options.proto".to_owned()), "{names:?}");
        assert!(names.contains(&"google/protobuf/descriptor.proto".to_owned()), "{names:?}");
    }

    #[test]
    fn extensions_of_method_options_are_listed_and_found() {
        let MessageResponse::AllExtensionNumbersResponse(numbers) =
            ask(MessageRequest::AllExtensionNumbersOfType("google.protobuf.MethodOptions".into()))
        else {
            panic!("expected extension numbers");
        };
        assert!(numbers.extension_number.contains(&50100), "{numbers:?}");
        let MessageResponse::FileDescriptorResponse(found) =
            ask(MessageRequest::FileContainingExtension(v1::ExtensionRequest {
                containing_type: "google.protobuf.MethodOptions".into(),
                extension_number: 50100,
            }))
        else {
            panic!("expected files");
        };
        let first = prost_types::FileDescriptorProto::decode(found.file_descriptor_proto[0].as_slice()).unwrap();
        assert_eq!(first.name(), "tenantry/v1/options.proto");
    }
}
