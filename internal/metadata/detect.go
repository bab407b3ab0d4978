package metadata

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// instanceDataPath is cloud-init's world-readable instance data, relative
// to the root (FACTS.md §1.7).
const instanceDataPath = "run/cloud-init/instance-data.json"

// dmiDir holds the DMI fields, one file each, relative to the root.
const dmiDir = "sys/class/dmi/id"

// azureAssetTag is the DMI chassis asset tag of every Azure VM (FACTS.md
// §1.5; cloud-init's ds-identify).
const azureAssetTag = "7783-7084-3265-9085-8269-3286-77"

// openStackTags are the DMI product names and chassis asset tags cloud-init
// takes for OpenStack (DataSourceOpenStack.py).
var openStackTags = []string{
	"OpenStack Nova", "OpenStack Compute", "HUAWEICLOUD", "OpenTelekomCloud", "SAP CCloud VM",
}

// Detect names the provider of the node under root without touching the
// network, and says how it knew; it returns "", "" when nothing matches.
//
// In order:
//  1. DMI naming Yandex: cloud-init has no Yandex datasource, so whatever
//     its data says there stands in for Yandex (FACTS.md §1.2).
//  2. cloud-init's instance-data.json, v1.cloud_name or v1.platform: gce,
//     aws, azure, openstack (and configdrive).
//  3. DMI: product_name, sys_vendor, bios_vendor, bios_version,
//     chassis_asset_tag, product_serial, and /sys/hypervisor/uuid for Xen
//     EC2.
//  4. cloud-init's instance data for any other cloud: provider cloud-init,
//     which reads the keys from that file.
//  5. An OpenStack config drive mounted at one of the known mount points.
func Detect(root string) (provider, how string) {
	if root == "" {
		root = "/"
	}
	dmi := readDMI(root)
	if p, how := dmiYandex(dmi); p != "" {
		return p, how
	}

	ci, ciErr := readInstanceData(root)
	if ciErr == nil {
		if p, how := cloudInitCloud(ci); p != "" {
			return p, how
		}
	}

	if p, how := dmiCloud(dmi); p != "" {
		return p, how
	}

	if ciErr == nil {
		return CloudInit, fmt.Sprintf("%s names no cloud with a metadata provider of its "+
			"own (cloud_name %q)", "/"+instanceDataPath, ci.V1.CloudName)
	}

	if dir := configDrive(root); dir != "" {
		return OpenStack, "config drive at " + dir
	}
	return "", ""
}

// dmiField is one DMI file's name and trimmed content.
type dmiField struct{ name, value string }

// readDMI reads the DMI fields Detect looks at; unreadable ones are left
// empty (product_serial is readable by root only).
func readDMI(root string) []dmiField {
	names := []string{
		"sys_vendor", "product_name", "bios_vendor", "bios_version", "board_vendor",
		"chassis_asset_tag", "product_serial",
	}
	fields := make([]dmiField, 0, len(names)+1)
	for _, n := range names {
		b, _ := os.ReadFile(filepath.Join(root, dmiDir, n))
		fields = append(fields, dmiField{n, strings.TrimSpace(string(b))})
	}

	b, _ := os.ReadFile(filepath.Join(root, "sys/hypervisor/uuid"))
	fields = append(fields, dmiField{"hypervisor uuid", strings.TrimSpace(string(b))})
	return fields
}

// dmiYandex matches Yandex Cloud's DMI: "Yandex" in a vendor or product
// field.
func dmiYandex(dmi []dmiField) (string, string) {
	for _, f := range dmi {
		switch f.name {
		case "sys_vendor", "product_name", "bios_vendor", "board_vendor":
			if strings.Contains(strings.ToLower(f.value), "yandex") {
				return Yandex, describe(f)
			}
		}
	}
	return "", ""
}

// dmiCloud matches the DMI of GCE, AWS, Azure and OpenStack.
func dmiCloud(dmi []dmiField) (string, string) {
	for _, f := range dmi {
		v := f.value
		switch f.name {
		case "product_name":
			switch {
			case v == "Google Compute Engine" || v == "Google":
				return GCE, describe(f)
			case slices.Contains(openStackTags, v):
				return OpenStack, describe(f)
			}
		case "sys_vendor", "bios_vendor":
			switch v {
			case "Google":
				return GCE, describe(f)
			case "Amazon EC2":
				return AWS, describe(f)
			case "OpenStack Foundation":
				return OpenStack, describe(f)
			}
		case "bios_version":
			// Xen instances: "4.11.amazon".
			if strings.HasSuffix(strings.ToLower(v), ".amazon") {
				return AWS, describe(f)
			}
		case "chassis_asset_tag":
			switch {
			case v == azureAssetTag:
				return Azure, describe(f)
			case slices.Contains(openStackTags, v):
				return OpenStack, describe(f)
			}
		case "product_serial":
			if strings.HasPrefix(v, "GoogleCloud-") {
				return GCE, describe(f)
			}
		case "hypervisor uuid":
			if strings.HasPrefix(strings.ToLower(v), "ec2") {
				return AWS, describe(f)
			}
		}
	}
	return "", ""
}

// describe says which DMI field matched.
func describe(f dmiField) string {
	if f.name == "hypervisor uuid" {
		return fmt.Sprintf("/sys/hypervisor/uuid %q", f.value)
	}
	return fmt.Sprintf("DMI %s %q", f.name, f.value)
}

// instanceData is the part of cloud-init's instance-data.json that
// detection and the cloud-init provider read.
type instanceData struct {
	V1 struct {
		CloudName string `json:"cloud_name"`
		Platform  string `json:"platform"`
	} `json:"v1"`
	DS                map[string]any `json:"ds"`
	Base64EncodedKeys []string       `json:"base64_encoded_keys"`
}

// readInstanceData reads and decodes root's instance-data.json.
func readInstanceData(root string) (*instanceData, error) {
	path := filepath.Join(root, instanceDataPath)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d instanceData
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return &d, nil
}

// cloudInitCloud maps cloud-init's cloud name or platform to a network
// provider.
func cloudInitCloud(d *instanceData) (string, string) {
	how := func(key, value string) string {
		return fmt.Sprintf("/%s v1.%s %q", instanceDataPath, key, value)
	}

	switch d.V1.CloudName {
	case "gce":
		return GCE, how("cloud_name", d.V1.CloudName)
	case "aws":
		return AWS, how("cloud_name", d.V1.CloudName)
	case "azure":
		return Azure, how("cloud_name", d.V1.CloudName)
	case "openstack", "configdrive":
		return OpenStack, how("cloud_name", d.V1.CloudName)
	}
	if d.V1.Platform == "openstack" {
		return OpenStack, how("platform", d.V1.Platform)
	}
	return "", ""
}
