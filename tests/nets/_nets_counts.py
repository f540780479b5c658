"""Parameter counts computed by arithmetic from the reference implementations' layer lists.

Independent of our modules: each function walks the layers of the cited reference file and
adds up weight and bias sizes, so a test can compare them with ``count_parameters(ours)``.
"""

from __future__ import annotations


def conv(cin: int, cout: int, k: int, bias: bool, groups: int = 1) -> int:
    return cin // groups * cout * k * k + (cout if bias else 0)


def linear(cin: int, cout: int, bias: bool) -> int:
    return cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def junyanz_unet(in_nc: int = 3, out_nc: int = 3, ngf: int = 64, num_downs: int = 8) -> int:
    """UnetGenerator with BatchNorm (use_bias=False) in junyanz models/networks.py."""
    total = conv(in_nc, ngf, 4, False) + conv(2 * ngf, out_nc, 4, True)  # outermost
    middle = [(ngf, 2 * ngf), (2 * ngf, 4 * ngf), (4 * ngf, 8 * ngf)] + [(8 * ngf, 8 * ngf)] * (num_downs - 5)
    for outer, inner in middle:
        total += conv(outer, inner, 4, False) + bn(inner) + conv(2 * inner, outer, 4, False) + bn(outer)
    total += conv(8 * ngf, 8 * ngf, 4, False) + conv(8 * ngf, 8 * ngf, 4, False) + bn(8 * ngf)  # innermost
    return total


def junyanz_patchgan(in_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> int:
    """NLayerDiscriminator; BatchNorm: affine, no conv bias; junyanz InstanceNorm: no affine, bias."""
    bias = norm != "batch"
    nrm = bn if norm == "batch" else (lambda c: 0)
    total = conv(in_nc, ndf, 4, True)
    mult = 1
    for n in range(1, n_layers):
        prev, mult = mult, min(2**n, 8)
        total += conv(ndf * prev, ndf * mult, 4, bias) + nrm(ndf * mult)
    prev, mult = mult, min(2**n_layers, 8)
    total += conv(ndf * prev, ndf * mult, 4, bias) + nrm(ndf * mult)
    return total + conv(ndf * mult, 1, 4, True)


def junyanz_resnet(in_nc: int = 3, out_nc: int = 3, ngf: int = 64, n_blocks: int = 9, affine_in: bool = False) -> int:
    """ResnetGenerator with InstanceNorm (use_bias=True); ``affine_in`` as in the 2017 code."""
    nrm = bn if affine_in else (lambda c: 0)
    total = conv(in_nc, ngf, 7, True) + nrm(ngf)
    total += conv(ngf, 2 * ngf, 3, True) + nrm(2 * ngf) + conv(2 * ngf, 4 * ngf, 3, True) + nrm(4 * ngf)
    total += n_blocks * 2 * (conv(4 * ngf, 4 * ngf, 3, True) + nrm(4 * ngf))
    total += conv(4 * ngf, 2 * ngf, 3, True) + nrm(2 * ngf) + conv(2 * ngf, ngf, 3, True) + nrm(ngf)
    return total + conv(ngf, out_nc, 7, True)


def ugatit_generator(ngf: int = 64, n_blocks: int = 4, img_size: int = 256, light: bool = False, nc: int = 3) -> int:
    """ResnetGenerator of znxlwm/UGATIT-pytorch networks.py (all convs and linears bias-free but conv1x1)."""
    ch = 4 * ngf
    total = conv(nc, ngf, 7, False) + conv(ngf, 2 * ngf, 3, False) + conv(2 * ngf, ch, 3, False)
    total += n_blocks * 2 * conv(ch, ch, 3, False)  # encoder residual blocks (IN without affine)
    total += 2 * linear(ch, 1, False) + conv(2 * ch, ch, 1, True)  # CAM
    fc_in = ch if light else (img_size // 4) ** 2 * ch
    total += linear(fc_in, ch, False) + linear(ch, ch, False) + 2 * linear(ch, ch, False)  # MLP, gamma, beta
    total += n_blocks * (2 * conv(ch, ch, 3, False) + 2 * ch)  # AdaLIN blocks: 2 convs + 2 rho
    total += conv(ch, 2 * ngf, 3, False) + 3 * 2 * ngf + conv(2 * ngf, ngf, 3, False) + 3 * ngf  # up + ILN
    return total + conv(ngf, nc, 7, False)


def ugatit_discriminator(ndf: int = 64, n_layers: int = 7, nc: int = 3) -> int:
    """Discriminator of znxlwm/UGATIT-pytorch networks.py (spectral norm adds no parameters)."""
    total = conv(nc, ndf, 4, True)
    for i in range(1, n_layers - 2):
        m = 2 ** (i - 1)
        total += conv(ndf * m, ndf * m * 2, 4, True)
    m = 2 ** (n_layers - 3)
    total += conv(ndf * m, ndf * m * 2, 4, True)
    ch = ndf * 2 ** (n_layers - 2)
    return total + 2 * linear(ch, 1, False) + conv(2 * ch, ch, 1, True) + conv(ch, 1, 4, False)


def srresnet(nf: int = 64, n_blocks: int = 16, scale: int = 4) -> int:
    """SRResNet of Ledig et al. Fig. 4: biased convs, BN, one-slope PReLUs."""
    total = conv(3, nf, 9, True) + 1
    total += n_blocks * (2 * conv(nf, nf, 3, True) + 2 * bn(nf) + 1)
    total += conv(nf, nf, 3, True) + bn(nf)
    total += {2: 1, 4: 2, 8: 3}[scale] * (conv(nf, 4 * nf, 3, True) + 1)
    return total + conv(nf, 3, 9, True)


def srgan_discriminator(ndf: int = 64, dense: int = 1024, pool: int = 6) -> int:
    """SRGAN D of Ledig et al. Fig. 4 (96x96 input -> 6x6x512 before the dense layer)."""
    chans = [ndf, ndf, 2 * ndf, 2 * ndf, 4 * ndf, 4 * ndf, 8 * ndf, 8 * ndf]
    total = conv(3, chans[0], 3, True)
    for cin, cout in zip(chans[:-1], chans[1:]):
        total += conv(cin, cout, 3, True) + bn(cout)
    return total + linear(chans[-1] * pool * pool, dense, True) + linear(dense, 1, True)
