SUMMARY = "vcf appliance image: vcfd on a read-only systemd root file system"
DESCRIPTION = "Disk image of the vertebral compression fracture detection appliance: \
               systemd, vcfd socket-activated on DICOM port 104, read-only root, writable \
               partitions for the configuration and the state, no network shell login."
SECTION = "images"
LICENSE = "MIT"

inherit core-image features_check

REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_INSTALL = "packagegroup-core-boot \
                 vcfd \
                 vcfd-weights \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
"

# Read-only root; what must persist lives on the /etc/vcfd and /var/lib/vcfd partitions.
IMAGE_FEATURES += "read-only-rootfs"
# No SSH server and no password-less or root-over-network login, even when local.conf asks
# for debug-tweaks (Poky's sample does). Hospital IT uses the local console and `vcfd check`.
IMAGE_FEATURES:remove = "debug-tweaks allow-empty-password empty-root-password allow-root-login ssh-server-dropbear ssh-server-openssh"

IMAGE_FSTYPES = "wic"
WKS_FILE = "vcf-appliance.wks.in"
# The EFI plugin of wic was renamed after scarthgap (bootimg-efi -> bootimg_efi).
VCF_WKS_EFI_PLUGIN ?= "${@'bootimg-efi' if 'scarthgap' in (d.getVar('LAYERSERIES_CORENAMES') or '').split() else 'bootimg_efi'}"
# Partition sizes in MiB: identity and config are tiny; the state partition holds the spool
# of received CT series and the results until retention deletes them.
VCF_CONFIG_PART_SIZE ?= "64"
VCF_STATE_PART_SIZE ?= "16384"
