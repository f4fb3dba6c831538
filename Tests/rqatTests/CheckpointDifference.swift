import Foundation
import Formats

/// Largest relative difference ||a - b|| / ||b|| over the tensors of two checkpoints.
func maxRelativeDifference(_ a: SafeTensorsFile, _ b: SafeTensorsFile) throws -> Double {
    var worst = 0.0
    for name in b.tensorNames {
        let x = try a.tensor(name), y = try b.tensor(name)
        var diff = 0.0, norm = 0.0
        for i in 0..<y.count { diff += pow(Double(x.ptr[i] - y.ptr[i]), 2); norm += pow(Double(y.ptr[i]), 2) }
        worst = max(worst, (diff / max(norm, 1e-30)).squareRoot())
    }
    return worst
}
