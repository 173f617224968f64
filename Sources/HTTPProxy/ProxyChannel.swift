import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import Security

/// A server channel with TLS first where the broker has a certificate:
/// Basic credentials never cross the network in the clear. The
/// certificate is the one current when the connection opens (a SIGHUP
/// reload reaches new connections). `base` sets up HTTP/1 and the
/// WebSocket upgrade behind it.
struct TLSFirst<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let tls: ReloadableTLSContext?
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current)) }
        }.flatMap { base.setup(channel: channel, logger: logger) }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
