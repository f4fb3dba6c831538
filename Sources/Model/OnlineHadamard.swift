import Formats
import Tensors

/// The online rotation x → x H / sqrt(n) of a linear layer's input rows (QuaRot's Hadamard
/// before down_proj), to pair with a weight W H / sqrt(n): (x H)(W H)ᵀ / n = x Wᵀ.
/// Stateless, so safe to share between layers and threads.
package final class OnlineHadamard: LinearInputTransform {
    package let hadamard: HadamardTransform

    package init(size: Int) throws { hadamard = try HadamardTransform(size: size) }

    package func transform(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        precondition(width == hadamard.size, "OnlineHadamard: rows of \(width) for a rotation of \(hadamard.size)")
        hadamard.apply(x, rows: rows)
    }
}

extension DecoderWeights {
    /// QuaRot's online rotation of every down_proj input (x -> x H_f / sqrt(f)), which a rotated
    /// checkpoint's W_down H_f / sqrt(f) expects. It goes first among the layer's input
    /// transforms, before any activation quantizer.
    package func installOnlineDownHadamard() throws {
        let rotation = try OnlineHadamard(size: config.intermediateSize)
        for layer in layers { layer.down.inputTransforms.insert(rotation, at: 0) }
    }
}
