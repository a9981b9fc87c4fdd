/** The generated messages and services of `tenantry.v1` and `google.rpc`. */
export * from "../gen/tenantry/v1/auth_service_pb.js";
export * from "../gen/tenantry/v1/common_pb.js";
export * from "../gen/tenantry/v1/jobs_service_pb.js";
export * from "../gen/tenantry/v1/scaling_service_pb.js";
export * from "../gen/tenantry/v1/tenant_service_pb.js";
export * from "../gen/tenantry/v1/usage_service_pb.js";
export * from "../gen/google/rpc/error_details_pb.js";
export * from "../gen/google/rpc/status_pb.js";
