import Foundation
import Formats
import Model
import Tensors

package enum PTQMethod: String, CaseIterable, Sendable { case rtn, gptq }

package struct PTQOptions: Sendable {
    package var scheme: QuantScheme
    package var method: PTQMethod
    /// MSE clip search for the group grids (RTN+clip; GPTQ with clipping).
    package var clipSearch: ClipSearch?
    package var gptq = GPTQOptions()
    /// Calibration sequences run through a block together.
    package var batchSequences = 4
    /// RTN only: a fixed clip ratio per row of the named matrices (FlatQuant's learned weight clips).
    package var rowShrinks: [String: [Float]] = [:]

    package init(scheme: QuantScheme, method: PTQMethod, clipSearch: ClipSearch? = nil) {
        self.scheme = scheme
        self.method = method
        self.clipSearch = clipSearch
    }
}

/// A transform of the full-precision model that PTQ runs before quantizing its weights.
package enum PTQTransform: String, Sendable, CaseIterable {
    /// QuaRot: random Hadamard rotations folded into the weights, seed 0, down_proj's input
    /// rotated online.
    case quarot
    /// FlatQuant: learned affine transforms per linear site, calibrated block by block; the
    /// weights' learned row clips go to RTN.
    case flatquant

    /// The activation and KV quantization the checkpoint records (nil: the scheme's defaults).
    package func activationQuant(_ scheme: QuantScheme) -> ActivationQuantSpec? {
        switch self {
        // QuaRot's clip ratios: the rotation has spread the outlier channels.
        case .quarot: ActivationQuantSpec(scheme: scheme, activationClip: 0.9, kvClip: 0.95)
        // FlatQuant's are learned per site and stored as tensors.
        case .flatquant: ActivationQuantSpec(scheme: scheme, activationClip: 1, kvClip: 1)
        }
    }
}

/// One quantized matrix's outcome: its relative output error on the calibration inputs,
/// ||W X - Q(W) X|| / ||W X|| (from the Hessian: sqrt(tr(D H D^T) / tr(W H W^T))).
package struct PTQLayerReport: Sendable {
    package var name: String
    package var relativeOutputError: Double?
}

package struct PTQResult {
    package var quantized: [String: QuantizedMatrix]
    package var reports: [PTQLayerReport]
    /// Sum over all matrices of the relative output error (nil without calibration data).
    package var totalRelativeOutputError: Double? {
        let errors = reports.compactMap(\.relativeOutputError)
        return errors.count == reports.count && !errors.isEmpty ? errors.reduce(0, +) : nil
    }
}

/// Post-training quantization of every linear layer of the decoder blocks (embeddings, LM head
/// and norms stay full precision), written back into `decoder`'s weights as their dequantized
/// values, so the decoder afterwards IS the fake-quant model.
///
/// Calibration is sequential, block by block, as GPTQ does: the calibration tokens' residual
/// stream is kept between blocks; in each block the inputs of each linear site (q/k/v, o,
/// gate/up, down) are gathered with every earlier matrix already quantized (layers that share an
/// input share one Hessian), the site is quantized, and only then is the next site observed.
package enum PTQ {
    /// The HF names and row ranges of the matrices each site's fused weight holds.
    static func matrices(of site: LinearSite, layer l: Int, config c: ModelConfig,
                         weights: DecoderLayerWeights) -> (tensor: Tensor, parts: [(name: String, rowStart: Int, rows: Int)]) {
        let parts = DecoderArchitecture(c).stackedRows(site).map { (DecoderArchitecture.name($0.role, layer: l), $0.rowStart, $0.rows) }
        return (weights.linear(site).weight.dense, parts)
    }

    package static func quantize(decoder: Decoder, calibration: [[Int]], options: PTQOptions,
                                log: (String) -> Void = { _ in }) throws -> PTQResult {
        let config = decoder.config
        if options.method == .gptq && calibration.isEmpty {
            throw PTQError("GPTQ needs calibration data (--calib): no usable sequence")
        }
        var result = PTQResult(quantized: [:], reports: [])
        // Residual streams of the calibration set, in batches of sequences.
        var batches: [(x: Tensor, layout: Decoder.RowLayout, lengths: [Int])] = []
        for start in stride(from: 0, to: calibration.count, by: options.batchSequences) {
            let seqs = Array(calibration[start..<min(start + options.batchSequences, calibration.count)])
            let (x, layout) = decoder.embed(seqs)
            batches.append((x, layout, seqs.map(\.count)))
        }

        for l in 0..<config.numHiddenLayers {
            let layer = decoder.weights.layers[l]
            for site in LinearSite.allCases {
                let (fused, parts) = matrices(of: site, layer: l, config: config, weights: layer)
                let width = fused.shape[1]
                var hessian: Hessian? = nil
                if !batches.isEmpty {
                    let h = Hessian(dim: width)
                    // The site's inputs, as its product sees them, go into the Hessian.
                    let linear = layer.linear(site)
                    linear.inputHooks.append { input, rows in h.add(rows: input, count: rows) }
                    for b in batches {
                        // Run the block on a copy, only as far as this site: the stream itself
                        // advances only after every site.
                        let x = b.x.copy()
                        let cache = decoder.makeCache(capacities: b.lengths, layers: 1)
                        decoder.runLayer(l, x: x, rows: x.shape[0], layout: b.layout, cache: cache, cacheLayer: 0,
                                         stopAfter: site)
                    }
                    linear.inputHooks.removeLast()
                    hessian = h
                }
                for part in parts {
                    let w = Tensor(shape: [part.rows, width])
                    w.ptr.update(from: fused.ptr + part.rowStart * width, count: part.rows * width)
                    let matrix: QuantizedMatrix
                    var error: Double? = nil
                    switch options.method {
                    case .rtn:
                        matrix = RTN.quantize(w, scheme: options.scheme, clipSearch: options.clipSearch, rowShrinks: options.rowShrinks[part.name])
                        if let hessian {
                            error = GPTQ.relativeOutputError(weight: w, quantized: matrix.dequantized(), hessian: hessian)
                        }
                    case .gptq:
                        var gptqOptions = options.gptq
                        gptqOptions.clipSearch = options.clipSearch
                        let r = try GPTQ.quantize(weight: w, hessian: hessian!, scheme: options.scheme,
                                                  options: gptqOptions, layerName: part.name)
                        matrix = r.matrix
                        error = r.stats.relativeOutputError
                    }
                    matrix.fakeQuantized(into: fused.ptr + part.rowStart * width)
                    result.quantized[part.name] = matrix
                    result.reports.append(PTQLayerReport(name: part.name, relativeOutputError: error))
                }
            }
            // Advance the calibration stream through the now-quantized block.
            for b in batches {
                let cache = decoder.makeCache(capacities: b.lengths, layers: 1)
                decoder.runLayer(l, x: b.x, rows: b.x.shape[0], layout: b.layout, cache: cache, cacheLayer: 0)
            }
            let errors = result.reports.suffix(7).compactMap(\.relativeOutputError)
            log(String(format: "ptq: block %d/%d quantized%@", l + 1, config.numHiddenLayers,
                       errors.isEmpty ? "" : String(format: ", mean relative output error %.4f", errors.reduce(0, +) / Double(errors.count))))
        }
        return result
    }

    /// The full-precision tensors of a quantized checkpoint: embeddings, norms, biases, LM head.
    package static func fullPrecisionTensors(_ w: DecoderWeights) -> [String: Tensor] {
        let architecture = DecoderArchitecture(w.config)
        var out: [String: Tensor] = [DecoderArchitecture.name(.embedding): w.embedding,
                                     DecoderArchitecture.name(.finalNorm): w.finalNorm]
        if architecture.has(.lmHead) { out[DecoderArchitecture.name(.lmHead)] = w.lmHead.weight.dense }
        for (l, layer) in w.layers.enumerated() {
            out[DecoderArchitecture.name(.inputNorm, layer: l)] = layer.inputNorm
            out[DecoderArchitecture.name(.postAttentionNorm, layer: l)] = layer.postAttentionNorm
            if let qn = layer.qNorm, let kn = layer.kNorm {
                out[DecoderArchitecture.name(.qNorm, layer: l)] = qn
                out[DecoderArchitecture.name(.kNorm, layer: l)] = kn
            }
            if let bias = layer.qkv.bias {
                var start = 0
                for role in LinearSite.qkv.biasParts {
                    let count = architecture.shape(role)[0]
                    let t = Tensor(shape: [count])
                    t.ptr.update(from: bias.ptr + start, count: count)
                    out[DecoderArchitecture.name(role, layer: l)] = t
                    start += count
                }
            }
        }
        return out
    }
}

package struct PTQError: UserFacingError {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}
