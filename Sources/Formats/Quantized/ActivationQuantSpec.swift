import Foundation

/// How a model fake-quantizes its activations and KV cache at run time: the `a<bits>` and
/// `kv<bits>` parts of a scheme (`w4a4kv4`), with their clip ratios. Every linear layer's input is
/// quantized per token; keys (after RoPE) and values per token and head (group = head_dim).
/// Embeddings, the LM head's input and the norms stay in full precision.
///
/// A quantized checkpoint keeps it in its quantization_config under `rqat_activation_quant`, so
/// eval, generate, later stages and RL serving ranks run the same policy (other GPTQ loaders
/// ignore the key and run the weights alone).
package struct ActivationQuantSpec: QuantizationConfigRecord, Equatable, Hashable, Sendable {
    package var activationBits: Int?
    package var activationSymmetric: Bool
    /// The range is this ratio times each token's min and max.
    package var activationClip: Float
    package var kvBits: Int?
    /// The K/V range's ratio.
    package var kvClip: Float

    /// No clipping by default. QuaRot clips at 0.9 (activations) and 0.95 (K/V), after its
    /// rotations have spread the outliers; without a rotation, clipping cuts the outlier channels
    /// themselves: on the arith teacher RTN W4A8KV8 keeps 94.9% accuracy unclipped and 61.1% at
    /// 0.9/0.95 (W4 alone: 95.1%), W4A4KV4 54.9% against 42.7% (docs/ACCURACY.md).
    package static let defaultActivationClip: Float = 1
    package static let defaultKVClip: Float = 1

    /// The scheme's activation and KV parts; nil for a weight-only scheme.
    package init?(scheme: QuantScheme, activationSymmetric: Bool = false, activationClip: Float = defaultActivationClip,
                  kvClip: Float = defaultKVClip) {
        guard scheme.activationBits != nil || scheme.kvBits != nil else { return nil }
        activationBits = scheme.activationBits
        kvBits = scheme.kvBits
        self.activationSymmetric = activationSymmetric
        self.activationClip = activationClip
        self.kvClip = kvClip
    }

    enum CodingKeys: String, CodingKey {
        case activationBits = "activation_bits", activationSymmetric = "activation_sym", activationClip = "activation_clip"
        case kvBits = "kv_bits", kvClip = "kv_clip"
    }

    package static let configKey = "rqat_activation_quant"
    package static let validForm = "a valid activation quantization (bits 2-8, clips in (0, 1])"

    package var isValid: Bool {
        (activationBits.map { (2...8).contains($0) } ?? true) && (kvBits.map { (2...8).contains($0) } ?? true)
            && activationClip > 0 && activationClip <= 1 && kvClip > 0 && kvClip <= 1
    }
}
