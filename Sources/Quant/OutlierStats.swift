import Foundation
import Formats
import Model
import Tensors

/// How outlier-heavy one linear layer's input is on calibration text: what decides whether 4-bit
/// per-token activation quantization can work without a rotation. Real LLMs carry "massive
/// activations", a few channels hundreds to thousands of times larger than the rest, which a
/// per-token grid spends all its levels on.
package struct SiteOutliers: Codable, Equatable, Sendable {
    package var layer: Int
    /// qkv, output, gateUp or down (`LinearSite`).
    package var site: String
    /// max over channels of (max |x| over tokens) / their median: how far the largest channel
    /// stands out.
    package var maxToMedian: Double
    /// Kurtosis E[(x - mean)^4] / var^2 over every entry (3 for a Gaussian).
    package var kurtosis: Double
    /// The largest |x|.
    package var maxAbs: Double

    enum CodingKeys: String, CodingKey {
        case layer, site, kurtosis
        case maxToMedian = "max_to_median", maxAbs = "max_abs"
    }
}

package enum OutlierStats {
    /// A ratio above this is what the literature calls massive activations.
    package static let massiveRatio = 100.0

    /// Runs `decoder` on `windows` (prefill, no sampling) and measures every block linear's input.
    /// The decoder is left as it was.
    package static func measure(decoder: Decoder, windows: [[Int]]) -> [SiteOutliers] {
        record(decoder: decoder, windows: windows).map {
            SiteOutliers(layer: $0.layer, site: "\($0.site)", maxToMedian: $0.recorder.maxToMedian,
                         kurtosis: $0.recorder.kurtosis, maxAbs: $0.recorder.maxAbs)
        }
    }

    /// Every block linear input's max |x| per channel over `windows` (full precision as `decoder` runs).
    package static func channelMaxima(decoder: Decoder, windows: [[Int]]) -> [LinearSiteKey: [Float]] {
        var out: [LinearSiteKey: [Float]] = [:]
        for r in record(decoder: decoder, windows: windows) { out[LinearSiteKey(layer: r.layer, site: r.site)] = r.recorder.channelMax.map(Float.init) }
        return out
    }

    private static func record(decoder: Decoder, windows: [[Int]]) -> [(layer: Int, site: LinearSite, recorder: Recorder)] {
        let weights = decoder.weights
        var recorders: [(layer: Int, site: LinearSite, recorder: Recorder)] = []
        for (l, layer) in weights.layers.enumerated() {
            for site in LinearSite.allCases {
                let recorder = Recorder()
                layer.linear(site).inputTransforms.append(recorder)
                recorders.append((l, site, recorder))
            }
        }
        defer {
            for (l, site, _) in recorders { weights.layers[l].linear(site).inputTransforms.removeLast() }
        }
        for window in windows where !window.isEmpty {
            let cache = decoder.makeCache(capacities: [window.count])
            _ = decoder.forward([SequenceChunk(sequence: 0, tokens: window)], cache: cache)
        }
        return recorders
    }

    /// An identity input transform that accumulates the statistics of what passes through it
    /// (the decoder calls a linear layer's transforms from one thread per forward).
    final class Recorder: LinearInputTransform, @unchecked Sendable {
        private(set) var channelMax: [Double] = []
        private var count = 0.0, sum = 0.0, sum2 = 0.0, sum3 = 0.0, sum4 = 0.0

        func transform(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
            if channelMax.isEmpty { channelMax = Array(repeating: 0, count: width) }
            for r in 0..<rows {
                let row = x + r * width
                for c in 0..<width {
                    let v = Double(row[c]), a = abs(v)
                    if a > channelMax[c] { channelMax[c] = a }
                    let v2 = v * v
                    sum += v; sum2 += v2; sum3 += v2 * v; sum4 += v2 * v2
                }
            }
            count += Double(rows * width)
        }

        var maxAbs: Double { channelMax.max() ?? 0 }

        var maxToMedian: Double {
            guard !channelMax.isEmpty else { return 0 }
            let sorted = channelMax.sorted()
            let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
            return median > 0 ? sorted.last! / median : 0
        }

        var kurtosis: Double {
            guard count > 0 else { return 0 }
            let m = sum / count, e2 = sum2 / count, e3 = sum3 / count, e4 = sum4 / count
            let variance = e2 - m * m
            guard variance > 0 else { return 0 }
            // E[(x - m)^4] from the raw moments.
            let central4 = e4 - 4 * m * e3 + 6 * m * m * e2 - 3 * m * m * m * m
            return central4 / (variance * variance)
        }
    }
}
