import Formats
import Tensors

/// What a transformed checkpoint's weights expect at run time, read once from it: QuaRot's
/// Hadamard before every down_proj and on every query and key head after RoPE, or FlatQuant's transform at every linear input with its
/// learned activation and KV-cache clips. The one place that installs them, on the inference
/// decoder (every command that runs the model) and on the training decoder (QAT and RL from
/// such an init), each followed by the activation quantization.
package struct OnlineTransforms {
    package let rotation: RotationSpec
    /// FlatQuant's tensors by checkpoint name (factors, scales, clip ratios); empty for QuaRot.
    /// A model trained from the init carries them into its own checkpoints.
    package let tensors: [String: Tensor]

    /// The same transforms with any of their tensors that `tensors` holds taken from there (a
    /// policy whose FlatQuant transforms trained).
    package func updating(from tensors: [String: Tensor]) -> OnlineTransforms {
        OnlineTransforms(rotation: rotation, tensors: self.tensors.merging(tensors.filter { self.tensors[$0.key] != nil }) { $1 })
    }

    /// The same, with the values `source` holds for any of their tensors (a training checkpoint).
    package func updating(from source: any WeightSource) throws -> OnlineTransforms {
        var found: [String: Tensor] = [:]
        for name in tensors.keys where source.has(name) { found[name] = try source.tensor(name) }
        return updating(from: found)
    }

    /// Transforms as given (FlatQuant's tensors by checkpoint name), e.g. for a benchmark.
    package init(rotation: RotationSpec, tensors: [String: Tensor] = [:]) {
        self.rotation = rotation
        self.tensors = tensors
    }

    /// The checkpoint's transforms; nil when it has none. Throws naming a missing tensor.
    package init?(_ checkpoint: Checkpoint) throws {
        guard let rotation = checkpoint.rotation else { return nil }
        self.rotation = rotation
        var tensors: [String: Tensor] = [:]
        if rotation.method == FlatQuantLayout.method {
            for l in 0..<checkpoint.config.numHiddenLayers {
                // The clip ratios are there only with activation or KV quantization, the head transforms only with KV quantization.
                for name in FlatQuantLayout.tensorNames(layer: l) where !FlatQuantLayout.isOptional(name) || checkpoint.weights.has(name) {
                    tensors[name] = try checkpoint.weights.tensor(name)
                }
            }
        } else if !rotation.onlineDownHadamard && !rotation.onlineQKHadamard {
            return nil
        }
        self.tensors = tensors
    }

    package var isFlatQuant: Bool { rotation.method == FlatQuantLayout.method }

    /// The inference decoder: the online transforms first at their sites, then `activation`.
    package func install(on weights: DecoderWeights, activation: ActivationQuantSpec?) throws {
        if isFlatQuant {
            try weights.installFlatQuant(from: InMemoryWeights(tensors, path: "<flatquant transforms>"), activation: activation)
            return
        }
        if rotation.onlineDownHadamard { try weights.installOnlineDownHadamard() }
        if rotation.onlineQKHadamard {
            let h = try HadamardTransform(size: weights.config.headDim)
            for layer in weights.layers { layer.headRotation = h }
        }
        if let activation { weights.installActivationQuant(activation) }
    }

    /// The training decoder, the same function: the transforms fixed, or (`trainable`, FlatQuant's)
    /// trained with the weights; the quantizers straight-through.
    package func install(on decoder: TrainableDecoder, activation: ActivationQuantSpec?, trainable: Bool = false) throws {
        let config = decoder.config
        if isFlatQuant {
            let source = InMemoryWeights(tensors, path: "<flatquant transforms>")
            for l in 0..<config.numHiddenLayers {
                for site in LinearSite.allCases {
                    let (transform, quantizer) = try FlatQuantLayout.site(l, site, from: source, activation: activation)
                    transform.trainsParameters = trainable
                    decoder.inputTransforms[LinearSiteKey(layer: l, site: site)] =
                        ChainedTransform.combining(transform, quantizer.map { TrainableActivationQuantizer($0) })
                }
                if let kv = try FlatQuantLayout.kvQuantizer(l, from: source, activation: activation, headDim: config.headDim) {
                    decoder.cacheTransforms[l] = TrainableActivationQuantizer(kv)
                }
                for site in FlatQuantLayout.HeadSite.allCases {
                    guard let t = try FlatQuantLayout.headTransform(l, site, from: source) else { continue }
                    t.trainsParameters = trainable
                    if site == .key { decoder.keyTransforms[l] = t } else { decoder.valueTransforms[l] = t }
                }
            }
            return
        }
        if rotation.onlineDownHadamard {
            let hadamard = try TrainableOnlineHadamard(size: config.intermediateSize)
            for l in 0..<config.numHiddenLayers { decoder.inputTransforms[LinearSiteKey(layer: l, site: .down)] = hadamard }
        }
        if rotation.onlineQKHadamard { decoder.headRotation = try HadamardTransform(size: config.headDim) }
        if let activation { decoder.installActivationQuant(activation) }
    }
}

extension DecoderWeights {
    /// A checkpoint's online transforms (when it has any), then `activation`: how a loaded model runs.
    package func installRunTimeTransforms(_ transforms: OnlineTransforms?, activation: ActivationQuantSpec?) throws {
        if let transforms { try transforms.install(on: self, activation: activation) } else if let activation { installActivationQuant(activation) }
    }
}

extension TrainableDecoder {
    /// The same on the training decoder (the transforms fixed unless `trainable`, the quantizers
    /// straight-through).
    package func installRunTimeTransforms(_ transforms: OnlineTransforms?, activation: ActivationQuantSpec?, trainable: Bool = false) throws {
        if let transforms { try transforms.install(on: self, activation: activation, trainable: trainable) } else if let activation { installActivationQuant(activation) }
    }
}

extension ActivationQuantSpec {
    /// What a model trained at `scheme` from an init quantizes its activations with: the init's
    /// own record (QuaRot's clips) when it quantizes the same widths, else the scheme's defaults.
    package static func training(_ scheme: QuantScheme?, from initRecord: ActivationQuantSpec?) -> ActivationQuantSpec? {
        guard let scheme else { return nil }
        if let r = initRecord, r.activationBits == scheme.activationBits, r.kvBits == scheme.kvBits { return r }
        return ActivationQuantSpec(scheme: scheme)
    }
}

/// QuaRot's online Hadamard as a training input transform: y = x H / sqrt(n), and since H / sqrt(n)
/// is orthogonal, dx = dy Hᵀ / sqrt(n). No parameters. Shared by every block's down site.
package final class TrainableOnlineHadamard: TrainableInputTransform {
    let hadamard: HadamardTransform
    package let parameters: [Parameter] = []

    package init(size: Int) throws { hadamard = try HadamardTransform(size: size) }

    package func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        precondition(width == hadamard.size, "online Hadamard of \(hadamard.size) on rows of \(width)")
        y.update(from: x, count: rows * width)
        hadamard.apply(y, rows: rows)
    }

    package func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        dx.update(from: dy, count: rows * width)
        hadamard.applyTransposed(dx, rows: rows)
    }
}
