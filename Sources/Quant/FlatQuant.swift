import Foundation
import Formats
import Model
import Tensors
import Train

/// FlatQuant (Sun et al., 2024): a learnable affine transform per linear site (`FlatQuantTransform`:
/// x → x diag(s)(L ⊗ R) online, W → W P⁻ᵀ folded), learnable clip ratios for every site's
/// activations, the KV cache and each weight row, trained block by block so that the
/// quantized block's output matches the full-precision block's on full-precision inputs.
///
/// The sites: q|k|v's input (hidden size), o's input (heads x head dim), gate|up's input (hidden
/// size), down's input (intermediate size), each with balanced Kronecker factors; with KV
/// quantization, per-head transforms of size head_dim (`FrozenHeadTransform`): keys k P_k after
/// RoPE with queries q P_k⁻ᵀ, and values v P_v with o_proj's weight W_o (I ⊗ P_v)⁻ᵀ P_o⁻ᵀ.
/// Where FlatQuant differs: its head transforms are full head_dim x head_dim matrices (here
/// Kronecker factors and a scale, like the sites'); it folds P_v into v_proj and applies
/// (P_o ⊗ P_v) at o as one transform over heads x head_dim, while here v P_v runs online (so
/// v_proj is quantized before it, and its bias needs no fold) and o's own transform stays a
/// balanced split of heads x head_dim.
package enum FlatQuant {
    /// Calibration settings. The published ones are 128 samples of 2048 tokens, 15 epochs at
    /// lr 5e-3 with 10x for the clip ratios; the CPU default is far smaller, and at lr 1e-3: on
    /// SmolLM2's first blocks 5e-3 made the training MSE rise within a few steps (docs/ACCURACY.md).
    package struct Settings: Codable, Equatable, Sendable {
        package var samples = 32
        package var length = 512
        package var epochs = 5
        package var batchSequences = 4
        package var learningRate = 1e-3
        package var clipLearningRateScale = 10.0
        /// The channel scales start SmoothQuant's way, s_j = max|W_j|^(1-α) / max|x_j|^α (x ⊙ s
        /// shrinks the outlier channels, W / s takes them), with FlatQuant's α = 0.3; nil: s = 1.
        package var smoothAlpha: Double? = 0.3
        /// Where every site's factors L and R start: FlatQuant's random orthogonal by default.
        package var factorStart: FlatQuantTransform.Start = .orthogonal
        /// Seeds the random starting factors (each block and site draws its own from it).
        package var seed: UInt64 = 0
        /// Calibrate only the first this many blocks (a study of the calibration; the rest keep
        /// their start). nil: all.
        package var blocks: Int?
        /// Train from this block on (a study of one deep block: the blocks before it only carry
        /// the full-precision inputs forward and keep their start). nil: from block 0.
        package var firstBlock: Int?

        package init() {}

        /// The CPU default; `published` is FlatQuant's.
        package static let cpuDefault = Settings()
        package static var published: Settings {
            var s = Settings()
            s.samples = 128; s.length = 2048; s.epochs = 15; s.learningRate = 5e-3
            return s
        }

        enum CodingKeys: String, CodingKey {
            case samples, length, epochs
            case batchSequences = "batch_sequences"
            case learningRate = "learning_rate"
            case clipLearningRateScale = "clip_learning_rate_scale"
            case smoothAlpha = "smooth_alpha"
            case blocks
            case firstBlock = "first_block"
            case factorStart = "factor_start"
            case seed
        }
    }

    /// What calibrating one block did.
    package struct BlockReport: Codable, Equatable, Sendable {
        package var layer: Int
        /// Mean squared error of the quantized block's output against the full-precision one,
        /// over the calibration tokens, at the start (`Settings.factorStart` factors, SmoothQuant
        /// channel scales, clip ratios near 1) and after training.
        package var mseBefore: Double
        package var mseAfter: Double
        package var steps: Int
        /// Training did not lower the error, so the block keeps its starting transforms and clips.
        package var keptInitial: Bool
        package var seconds: Double

        enum CodingKeys: String, CodingKey {
            case layer, steps, seconds
            case mseBefore = "mse_before"
            case mseAfter = "mse_after"
            case keptInitial = "kept_initial"
        }
    }

}

// MARK: - One block's learnable state

/// The transforms and clip ratios of one decoder block.
package final class FlatQuantBlock {
    package let layer: Int
    package let transforms: [LinearSite: FlatQuantTransform]
    package let activationClips: [LinearSite: LearnableClipQuantizer]
    package let kvClip: LearnableClipQuantizer?
    /// The per-head transforms after RoPE, with KV quantization: the key transform (keys k P,
    /// queries q P⁻ᵀ) and the value transform (values v P, o's weight read as W_o (I ⊗ P)⁻ᵀ
    /// before its site's transform).
    package let headTransforms: [FlatQuantLayout.HeadSite: FlatQuantTransform]
    package var keyTransform: FlatQuantTransform? { headTransforms[.key] }
    package var valueTransform: FlatQuantTransform? { headTransforms[.value] }
    /// Per block weight: one clip logit per output row.
    package let weightClips: [TensorRole: Parameter]

    /// Transforms starting at `start` (random ones drawn from `seed`, the same for the same
    /// block, site and seed) and clip ratios near 1 for block l of `config`; the key and value
    /// transforms when `headTransforms` (default: when the KV cache is quantized).
    package init(layer l: Int, config: ModelConfig, activation: ActivationQuantSpec?,
                 start: FlatQuantTransform.Start = .identity, seed: UInt64 = 0, headTransforms: Bool? = nil) throws {
        layer = l
        let c = config
        let widths: [LinearSite: Int] = [.qkv: c.hiddenSize, .output: c.numAttentionHeads * c.headDim,
                                         .gateUp: c.hiddenSize, .down: c.intermediateSize]
        var transforms: [LinearSite: FlatQuantTransform] = [:], clips: [LinearSite: LearnableClipQuantizer] = [:]
        // One random stream per block and transform: the sites', then the head transforms'.
        let perBlock = LinearSite.allCases.count + FlatQuantLayout.HeadSite.allCases.count
        func rng(_ i: Int) -> SeededRNG { SeededRNG(seed: StableHash.splitMix(seed &* StableHash.golden &+ UInt64(l * perBlock + i))) }
        for (i, site) in LinearSite.allCases.enumerated() {
            var r = rng(i)
            transforms[site] = try FlatQuantTransform(width: widths[site]!, name: FlatQuantLayout.prefix(l, site), start: start, rng: &r)
            if let bits = activation?.activationBits {
                clips[site] = LearnableClipQuantizer(bits: bits, symmetric: activation!.activationSymmetric,
                                                     name: FlatQuantLayout.activationClipName(l, site))
            }
        }
        self.transforms = transforms
        activationClips = clips
        kvClip = activation?.kvBits.map { LearnableClipQuantizer(bits: $0, groupSize: c.headDim, name: FlatQuantLayout.kvClipName(l)) }
        var heads: [FlatQuantLayout.HeadSite: FlatQuantTransform] = [:]
        if headTransforms ?? (activation?.kvBits != nil) {
            for (i, site) in FlatQuantLayout.HeadSite.allCases.enumerated() {
                var r = rng(LinearSite.allCases.count + i)
                heads[site] = try FlatQuantTransform(width: c.headDim, name: FlatQuantLayout.headPrefix(l, site), start: start, rng: &r)
            }
        }
        self.headTransforms = heads
        let arch = DecoderArchitecture(config)
        var weightClips: [TensorRole: Parameter] = [:]
        for role in TensorRole.blockLinears {
            let spec = arch.spec(role, layer: l)
            let t = Tensor(shape: [spec.shape[0]])
            t.fill(5)
            weightClips[role] = Parameter(name: FlatQuantLayout.weightClipName(spec.name), value: t)
        }
        self.weightClips = weightClips
    }

    /// SmoothQuant's channel scales for every site, from the site inputs' max |x| per channel
    /// and its weights' (by block weight): s_j = max|W_j|^(1-α) / max|x_j|^α, 1 where either is 0.
    package func smoothChannelScales(activationMax: [LinearSite: [Float]], weights: [TensorRole: Tensor], alpha: Double) {
        for site in LinearSite.allCases {
            guard let xMax = activationMax[site] else { continue }
            let s = transforms[site]!.scale.value
            precondition(xMax.count == s.count, "FlatQuant: \(xMax.count) channel maxima for a transform of \(s.count)")
            var wMax = [Float](repeating: 0, count: s.count)
            for role in site.parts {
                guard let w = weights[role] else { continue }
                let cols = w.shape[1]
                for r in 0..<w.shape[0] { for j in 0..<cols { wMax[j] = max(wMax[j], abs(w.ptr[r * cols + j])) } }
            }
            for j in 0..<s.count {
                let x = Double(xMax[j]), w = Double(wMax[j])
                s.ptr[j] = x > 0 && w > 0 ? Float(pow(w, 1 - alpha) / pow(x, alpha)) : 1
            }
        }
    }

    /// The site whose input a block weight reads.
    static func site(of role: TensorRole) -> LinearSite {
        LinearSite.allCases.first { $0.parts.contains(role) }!
    }

    /// A block weight as calibration quantizes it and the export folds it: W P⁻ᵀ, P the
    /// transform of the site it reads; o_proj's first through the value transform per head:
    /// W_o (I ⊗ P_v)⁻ᵀ P_o⁻ᵀ, since its input arrives as y (I ⊗ P_v). w, out: (rows, input width).
    package func transformWeight(_ role: TensorRole, _ w: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, rows: Int) {
        let site = transforms[Self.site(of: role)]!
        guard role == .o, let value = valueTransform else { return site.transformWeight(w, into: out, rows: rows) }
        let mid = Tensor(shape: [rows * site.width])
        value.transformWeight(w, into: mid.ptr, rows: rows * site.width / value.width)
        site.transformWeight(mid.ptr, into: out, rows: rows)
    }

    /// Given dL/d(the transformed weight), ADDS the transforms' gradients and, when given,
    /// dL/dW into `dWeight`.
    package func weightBackward(_ role: TensorRole, _ w: UnsafePointer<Float>, dTransformed: UnsafePointer<Float>, rows: Int,
                                dWeight: UnsafeMutablePointer<Float>?) {
        let site = transforms[Self.site(of: role)]!
        guard role == .o, let value = valueTransform else {
            return site.weightBackward(w, dTransformed: dTransformed, rows: rows, dWeight: dWeight)
        }
        let headRows = rows * site.width / value.width
        let mid = Tensor(shape: [rows * site.width]), dMid = Tensor(shape: [rows * site.width])
        value.transformWeight(w, into: mid.ptr, rows: headRows)
        site.weightBackward(mid.ptr, dTransformed: dTransformed, rows: rows, dWeight: dMid.ptr)
        value.weightBackward(w, dTransformed: dMid.ptr, rows: headRows, dWeight: dWeight)
    }

    package var transformParameters: [Parameter] {
        LinearSite.allCases.flatMap { transforms[$0]!.parameters }
            + FlatQuantLayout.HeadSite.allCases.flatMap { headTransforms[$0]?.parameters ?? [] }
    }
    package var clipParameters: [Parameter] {
        LinearSite.allCases.compactMap { activationClips[$0]?.logit } + (kvClip.map { [$0.logit] } ?? [])
            + TensorRole.blockLinears.map { weightClips[$0]! }
    }

    /// Installs the block's transforms, activation and KV quantizers on block `index` of a
    /// training decoder.
    package func install(on decoder: TrainableDecoder, index: Int) {
        for site in LinearSite.allCases {
            decoder.inputTransforms[LinearSiteKey(layer: index, site: site)] =
                ChainedTransform.combining(transforms[site]!, activationClips[site])
        }
        decoder.cacheTransforms[index] = kvClip
        decoder.keyTransforms[index] = keyTransform
        decoder.valueTransforms[index] = valueTransform
    }

    /// The tensors a checkpoint keeps to run the block as calibrated: each site's factors and
    /// scales and its activation clip ratio, the KV clip ratio, the head transforms' factors and scales.
    package var savedTensors: [String: Tensor] {
        var out: [String: Tensor] = [:]
        for site in LinearSite.allCases {
            for p in transforms[site]!.parameters { out[p.name] = p.value }
            if let clip = activationClips[site] { out[FlatQuantLayout.activationClipName(layer, site)] = Tensor(shape: [1], values: [clip.clipRatio]) }
        }
        if let kv = kvClip { out[FlatQuantLayout.kvClipName(layer)] = Tensor(shape: [1], values: [kv.clipRatio]) }
        for t in headTransforms.values { for p in t.parameters { out[p.name] = p.value } }
        return out
    }

    /// Each weight row's clip ratio sigmoid(logit), by matrix name (`PTQOptions.rowShrinks`).
    package func weightClipRatios(_ config: ModelConfig) -> [String: [Float]] {
        let arch = DecoderArchitecture(config)
        var out: [String: [Float]] = [:]
        for (role, p) in weightClips { out[arch.spec(role, layer: layer).name] = p.value.array.map { 1 / (1 + expf(-$0)) } }
        return out
    }
}

// MARK: - The weight side in training

/// FlatQuant's weights as a `TrainingWeightQuantizer`: W → Q_c(W P⁻ᵀ), P the transform of the
/// site the weight reads, c its rows' learnable clip ratios, Q the scheme's RTN grid (per row or
/// group). Backward is straight-through inside the clipped range, gives the clip logits their
/// gradient (as `LearnableClipQuantizer`) and carries dL/d(W P⁻ᵀ) to the transform; W itself
/// gets a gradient only when its parameter is not frozen.
package final class FlatQuantWeightQuantizer: TrainingWeightQuantizer {
    private struct Entry {
        let block: FlatQuantBlock
        let role: TensorRole
        let clip: Parameter
    }
    private var entries: [ObjectIdentifier: Entry] = [:]
    let bits: Int
    let groupSize: Int?
    let symmetric: Bool
    package private(set) var generation = 0
    package let parameters: [Parameter] = []
    /// Passes dL/d(W P⁻ᵀ) through entries clamped at the grid's ends too (plain identity instead
    /// of the clip mask). The mask is the straight-through estimator as FlatQuant (and PyTorch's
    /// fake quantization) has it; without it, at a grid fine enough to be exact, the two sides'
    /// gradients of a transform cancel, which the tests use to check their composition.
    package var passesClampedGradients = false

    /// For block `index` of `decoder`, the weights of `block`.
    package init(decoder: TrainableDecoder, blocks: [(index: Int, block: FlatQuantBlock)], scheme: QuantScheme) {
        bits = scheme.weightBits!
        groupSize = scheme.groupSize
        symmetric = scheme.symmetric
        let byName = Dictionary(uniqueKeysWithValues: decoder.linearWeights.map { ($0.name, $0) })
        let arch = DecoderArchitecture(decoder.config)
        for (index, block) in blocks {
            for role in TensorRole.blockLinears {
                guard let p = byName[arch.spec(role, layer: index).name] else { continue }
                entries[ObjectIdentifier(p)] = Entry(block: block, role: role, clip: block.weightClips[role]!)
            }
        }
    }

    package func refresh() { generation += 1 }

    private func entry(_ p: Parameter) -> Entry {
        guard let e = entries[ObjectIdentifier(p)] else { preconditionFailure("FlatQuantWeightQuantizer: \(p.name) has no transform") }
        return e
    }

    /// Calls body(row, group start, count, grid, clip ratio) for every group of W P⁻ᵀ.
    private func forEachGroup(_ t: Tensor, clip: Parameter, _ body: (Int, Int, Int, QuantGrid, Float) -> Void) {
        let rows = t.shape[0], cols = t.shape[1], width = groupSize ?? cols
        for r in 0..<rows {
            let c = 1 / (1 + expf(-clip.value.ptr[r]))
            var start = 0
            while start < cols {
                let count = min(width, cols - start)
                let grid = QuantGrid(values: t.ptr + r * cols + start, count: count, bits: bits, symmetric: symmetric, shrink: c)
                body(r, start, count, grid, c)
                start += count
            }
        }
    }

    private func transformed(_ p: Parameter) -> Tensor {
        let t = Tensor(shape: p.value.shape)
        let e = entry(p)
        e.block.transformWeight(e.role, p.value.ptr, into: t.ptr, rows: p.value.shape[0])
        return t
    }

    package func forwardWeight(of p: Parameter, into out: UnsafeMutablePointer<Float>) {
        let t = transformed(p), cols = t.shape[1]
        forEachGroup(t, clip: entry(p).clip) { r, start, count, grid, _ in
            let x = t.ptr + r * cols + start, y = out + r * cols + start
            for j in 0..<count { y[j] = grid.fakeQuantize(x[j]) }
        }
    }

    package func backward(of p: Parameter, dQuantized: UnsafePointer<Float>) {
        let e = entry(p)
        let t = transformed(p), cols = t.shape[1]
        let dt = Tensor(shape: t.shape)
        let dClip = e.clip.grad.ptr
        forEachGroup(t, clip: e.clip) { r, start, count, grid, c in
            let x = t.ptr + r * cols + start, dy = dQuantized + r * cols + start, dx = dt.ptr + r * cols + start
            let maxCode = Float(grid.maxCode)
            var dc: Float = 0
            for j in 0..<count {
                let u = x[j] / grid.scale, code = u.rounded(.toNearestOrEven) + grid.zero
                if passesClampedGradients { dx[j] = dy[j] }
                if code < 0 { dc += dy[j] * (0 - grid.zero) * grid.scale }
                else if code > maxCode { dc += dy[j] * (maxCode - grid.zero) * grid.scale }
                else { dx[j] = dy[j]; dc += dy[j] * (u.rounded(.toNearestOrEven) - u) * grid.scale }
            }
            // dx̂/dc = slope s / c and dc/dα = c (1 - c).
            dClip[r] += dc * (1 - c)
        }
        e.block.weightBackward(e.role, p.value.ptr, dTransformed: dt.ptr, rows: p.value.shape[0],
                               dWeight: p.frozen ? nil : p.grad.ptr)
    }
}

// MARK: - Calibration

extension FlatQuant {
    /// Trains every block's transforms and clip ratios, block by block, on `sequences` (each
    /// `settings.length` tokens) through the full-precision model `source`. Returns the blocks
    /// and what each calibration did.
    package static func calibrate(config: ModelConfig, source: any WeightSource, sequences: [[Int]], scheme: QuantScheme,
                                  settings: Settings, log: (String) -> Void) throws -> (blocks: [FlatQuantBlock], reports: [BlockReport]) {
        guard scheme.weightBits != nil else { throw FlatQuantError("FlatQuant quantizes weights: the scheme needs w<bits>") }
        guard let length = sequences.first?.count, length > 0, sequences.allSatisfy({ $0.count == length }) else {
            throw FlatQuantError("FlatQuant calibration needs sequences of one length (got \(Set(sequences.map(\.count)).sorted()))")
        }
        let activation = ActivationQuantSpec(scheme: scheme)
        let c = config.hiddenSize, rowsPerSequence = length
        let batch = max(1, min(settings.batchSequences, sequences.count))
        let batches = sequences.count / batch
        guard batches > 0 else { throw FlatQuantError("FlatQuant calibration: no sequences") }

        // x: (S*T, C) full-precision input of the current block, starting with the embeddings.
        let embedding = try source.tensor(DecoderArchitecture.name(.embedding))
        var x = Tensor(shape: [batches * batch * rowsPerSequence, c])
        for (s, seq) in sequences.prefix(batches * batch).enumerated() {
            for (t, token) in seq.enumerated() { x.row(s * rowsPerSequence + t).update(from: embedding.row(token), count: c) }
        }
        var blockConfig = config
        blockConfig.numHiddenLayers = 1
        let arch = DecoderArchitecture(config), blockArch = DecoderArchitecture(blockConfig)
        let batchRows = batch * rowsPerSequence

        let calibrated = min(config.numHiddenLayers, settings.blocks ?? config.numHiddenLayers)
        if let first = settings.firstBlock, !(0..<calibrated).contains(first) {
            throw FlatQuantError("FlatQuant calibration: first block \(first) is outside the \(calibrated) calibrated blocks (0..<\(calibrated)); give more blocks or an earlier first block")
        }
        // Each site's input channel maxima in full precision, for the starting channel scales;
        // through the calibrated blocks only (a full-precision decoder of the first ones).
        let channelMaxima = try settings.smoothAlpha.map { _ in
            var firstBlocks = config
            firstBlocks.numHiddenLayers = calibrated
            return OutlierStats.channelMaxima(decoder: Decoder(weights: try DecoderWeights(config: firstBlocks, source: source)),
                                              windows: Array(sequences.prefix(batches * batch)))
        }
        var blocks: [FlatQuantBlock] = [], reports: [BlockReport] = []
        for l in 0..<calibrated {
            let start = Date()
            // One block as a one-block decoder (model-level tensors are shared, not trained).
            var tensors: [String: Tensor] = [:]
            for spec in blockArch.tensors {
                if spec.role.isPerLayer {
                    tensors[spec.name] = try source.tensor(arch.spec(spec.role, layer: l).name)
                } else if spec.role == .embedding || spec.role == .lmHead {
                    tensors[spec.name] = embedding
                } else {
                    tensors[spec.name] = try source.tensor(spec.name)
                }
            }
            let decoder = try TrainableDecoder(config: blockConfig, source: InMemoryWeights(tensors, path: "<flatquant block \(l)>"))
            for p in decoder.parameters { p.frozen = true }

            // y: the full-precision block's output.
            let y = Tensor(shape: x.shape)
            for b in 0..<batches {
                let out = decoder.forwardBlocks(input: x.ptr + b * batchRows * c, batch: batch, length: length)
                (y.ptr + b * batchRows * c).update(from: out.ptr, count: batchRows * c)
            }
            if l < settings.firstBlock ?? 0 {
                x = y
                continue
            }

            func startingBlock() throws -> FlatQuantBlock {
                let block = try FlatQuantBlock(layer: l, config: config, activation: activation, start: settings.factorStart, seed: settings.seed)
                if let alpha = settings.smoothAlpha, let maxima = channelMaxima {
                    var xMax: [LinearSite: [Float]] = [:], w: [TensorRole: Tensor] = [:]
                    for site in LinearSite.allCases { xMax[site] = maxima[LinearSiteKey(layer: l, site: site)] }
                    for role in TensorRole.blockLinears { w[role] = tensors[blockArch.spec(role, layer: 0).name] }
                    block.smoothChannelScales(activationMax: xMax, weights: w, alpha: alpha)
                    for t in block.transforms.values { try t.refreshInverse() }
                }
                return block
            }
            let block = try startingBlock()
            block.install(on: decoder, index: 0)
            let quantizer = FlatQuantWeightQuantizer(decoder: decoder, blocks: [(0, block)], scheme: scheme)
            decoder.weightQuantizer = quantizer

            func meanSquaredError() -> Double {
                var sum = 0.0
                for b in 0..<batches {
                    let out = decoder.forwardBlocks(input: x.ptr + b * batchRows * c, batch: batch, length: length)
                    sum += squaredDifference(out.ptr, y.ptr + b * batchRows * c, count: batchRows * c)
                }
                return sum / Double(batches * batchRows * c)
            }
            let before = meanSquaredError()

            let transformOptimizer = AdamW(parameters: block.transformParameters, weightDecay: 0)
            let clipOptimizer = AdamW(parameters: block.clipParameters, weightDecay: 0)
            let steps = settings.epochs * batches
            let schedule = LRSchedule.cosine(peak: settings.learningRate, warmupSteps: 0, totalSteps: max(1, steps), minLRRatio: 0)
            let dOut = Tensor(shape: [batchRows, c])
            var epochLoss = 0.0
            for step in 0..<steps {
                let b = step % batches
                for p in block.transformParameters + block.clipParameters { p.zeroGrad() }
                let out = decoder.forwardBlocks(input: x.ptr + b * batchRows * c, batch: batch, length: length)
                // L = mean (out - y)^2, dL/dout = 2 (out - y) / count
                let target = y.ptr + b * batchRows * c, scale = Float(2.0 / Double(batchRows * c))
                for i in 0..<batchRows * c { dOut.ptr[i] = scale * (out.ptr[i] - target[i]) }
                epochLoss += squaredDifference(out.ptr, target, count: batchRows * c) / Double(batchRows * c)
                if (step + 1) % batches == 0 {
                    log(String(format: "flatquant: block %d epoch %d/%d: training MSE %.4g", l, (step + 1) / batches, settings.epochs, epochLoss / Double(batches)))
                    epochLoss = 0
                }
                _ = decoder.backwardBlocks(dOutput: dOut.ptr)
                if Gradients.hasNonFinite(block.transformParameters + block.clipParameters) {
                    throw FlatQuantError("FlatQuant calibration of block \(l): a gradient is not finite at step \(step + 1); lower the learning rate (\(settings.learningRate))")
                }
                let lr = schedule.lr(step: step)
                transformOptimizer.step(lr: lr)
                clipOptimizer.step(lr: lr * settings.clipLearningRateScale)
                for t in block.transforms.values { try t.refreshInverse() }
                for t in block.headTransforms.values { try t.refreshInverse() }
                quantizer.refresh()
            }
            var after = meanSquaredError()
            // Training on straight-through gradients can end worse than it started (a small
            // block, noisy rounding); then the block keeps its start, as a clip search keeps no clip.
            var kept = block
            if !(after < before) {
                kept = try startingBlock()
                after = before
            }
            let report = BlockReport(layer: l, mseBefore: before, mseAfter: after, steps: steps,
                                     keptInitial: kept !== block, seconds: Date().timeIntervalSince(start))
            log(String(format: "flatquant: block %d: output MSE %.4g -> %.4g in %d steps (%.1f s)%@", l, before, after, steps, report.seconds,
                       report.keptInitial ? ", training did not lower it: the start kept" : ""))
            reports.append(report)
            blocks.append(kept)
            x = y   // the next block trains on full-precision inputs
        }
        return (blocks, reports)
    }

    static func squaredDifference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Double {
        var sum = 0.0
        for i in 0..<count { let d = Double(a[i] - b[i]); sum += d * d }
        return sum
    }
}

// MARK: - Folding into a model and running it

extension FlatQuant {
    /// The model with every block's transforms applied: weights W P⁻ᵀ (full precision, not yet
    /// quantized) in new tensors, and the online x → x P, the learned activation and KV quantizers
    /// installed. Same function as `weights` up to quantization.
    package static func transformedWeights(_ weights: DecoderWeights, blocks: [FlatQuantBlock]) throws -> DecoderWeights {
        let config = weights.config
        var tensors = QuaRot.namedCopies(weights)
        let arch = DecoderArchitecture(config)
        for block in blocks {
            for role in TensorRole.blockLinears {
                let name = arch.spec(role, layer: block.layer).name
                let w = tensors[name]!, out = Tensor(shape: w.shape)
                block.transformWeight(role, w.ptr, into: out.ptr, rows: w.shape[0])
                tensors[name] = out
            }
            for (name, t) in block.savedTensors { tensors[name] = t }
        }
        let source = InMemoryWeights(tensors, path: "<flatquant>")
        let out = try DecoderWeights(config: config, source: source)
        try out.installFlatQuant(from: source)
        return out
    }
}

