import Hummingbird
import NIOCore

/// The router's request context: Hummingbird's basic one plus the client's
/// address, which the login and registration limits count by.
struct GatewayRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// The client's IP address, as the limits key it.
    var clientAddress: String { remoteAddress?.ipAddress ?? "unknown" }
}
